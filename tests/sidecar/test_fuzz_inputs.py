"""Property-based: any sidecar config loads or raises ConfigError; any query API answer, range
or instant, parses or raises BadAnswer (a ReaderError); each within a time bound."""

from __future__ import annotations

import json

import numpy as np
import yaml
from hypothesis import given
from hypothesis import strategies as st

from anomaly_sidecar.config import ConfigError, SidecarConfig, load_config
from anomaly_sidecar.reader import BadAnswer, parse_answer, parse_matrix, parse_vector
from tests.sidecar.helpers import MINIMAL_CONFIG
from tests.support.fuzzing import FUZZ, json_values, load_file, raw_bytes, scalars

BASE = yaml.safe_load(MINIMAL_CONFIG)
SCALE_OUT_SECTIONS = """\
writer:
  pull: {}
  remote_write:
    url: http://127.0.0.1:8428/api/v1/write
    batch_size: 1000
    queue_size: 100000
    min_backoff: 100ms
    max_backoff: 10s
    max_sample_age: 10m
    headers:
      X-Scope-OrgID: tenant
shard:
  index: 1
  count: 3
"""
"""The writer and shard sections, so mutations reach their keys too."""
SAFE_TYPES = ["zscore", "mad", "arima", "likelihood", "_rolling", "base", "nope", "lstm.x"]


def paths(document: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key))
    return found


@st.composite
def mutated_configs(draw) -> bytes:
    """The README's minimal config (with or without the writer and shard sections) with a few
    values replaced by arbitrary ones (TensorFlow's lstm type is left out: importing it would
    take the time bound)."""
    document = yaml.safe_load(MINIMAL_CONFIG + draw(st.sampled_from(["", SCALE_OUT_SECTIONS])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(document)))
        target = document
        for key in path[:-1]:
            target = target[key]
        if not isinstance(target, dict):
            continue
        target[path[-1]] = draw(st.one_of(json_values, st.sampled_from(SAFE_TYPES)))
    models = document.get("models")
    if draw(st.booleans()) and isinstance(models, dict):
        model = models.get("cpu_zscore")
        if isinstance(model, dict):
            model[draw(st.sampled_from(["window", "threshold", "min_window_points", "order",
                                        "type", "min_samples"]))] = draw(
                st.one_of(scalars, st.sampled_from(SAFE_TYPES), st.lists(scalars, max_size=3)))
    return yaml.safe_dump(document).encode()


configs = st.one_of(mutated_configs(), json_values.map(lambda doc: yaml.safe_dump(doc).encode()),
                    raw_bytes)


@FUZZ
@given(content=configs)
def test_any_config_loads_or_raises_config_error(content: bytes) -> None:
    config = load_file(content, "sidecar.yml", load_config, ConfigError)
    assert config is None or isinstance(config, SidecarConfig)


sample = st.one_of(st.tuples(st.one_of(st.integers(), st.floats()),
                             st.one_of(st.text(max_size=8), st.sampled_from(
                                 ["1", "NaN", "+Inf", "-1e308", "1e999"]))).map(list),
                   json_values)
samples = st.lists(sample, max_size=4)
answers = st.one_of(
    st.fixed_dictionaries({"status": st.sampled_from(["success", "error", 1]),
                           "data": st.one_of(json_values, st.fixed_dictionaries({
                               "resultType": st.sampled_from(["matrix", "vector", 3]),
                               "result": st.one_of(json_values, st.lists(st.fixed_dictionaries(
                                   {}, optional={"metric": st.one_of(
                                       st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
                                       json_values),
                                                 "values": st.one_of(samples, json_values),
                                                 "value": sample}),
                                   max_size=3))}))}).map(lambda doc: json.dumps(doc).encode()),
    json_values.map(lambda doc: json.dumps(doc).encode()),
    raw_bytes)


@FUZZ
@given(body=answers)
def test_any_answer_parses_or_raises_bad_answer(body: bytes) -> None:
    """As a range answer (parse_matrix) and as an instant one (parse_vector)."""
    try:
        matrix = parse_matrix(parse_answer(body))
    except BadAnswer as error:
        assert len(str(error)) < 2000
    else:
        for key, stamps, numbers in matrix:
            assert all(isinstance(name, str) and isinstance(value, str) for name, value in key)
            assert len(stamps) == len(numbers) and np.isfinite(stamps).all()
    try:
        vector = parse_vector(parse_answer(body))
    except BadAnswer as error:
        assert len(str(error)) < 2000
    else:
        for key, value in vector.items():
            assert all(isinstance(name, str) and isinstance(label, str) for name, label in key)
            assert isinstance(value, float) and not np.isinf(value)
