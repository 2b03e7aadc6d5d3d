"""`make demo`'s parts without a stack: the replayed incident and its labels, and the demo's
default detector alarming on the labelled anomaly and nowhere before it (the whole demo runs in
tests/alerting/test_run_stack.py)."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_sidecar.config import parse_config
from anomaly_sidecar.detector import build_detector
from anomaly_sidecar.models.base import SeriesBatch
from scripts.demo import DEMO_SIDECAR, running_demo
from scripts.demo_incident import SERVING_REGRESSION
from scripts.stack import DEFAULT_SIDECAR_CONFIG, StackOptions
from scripts.stack_config import dump_yaml, load_yaml
from tests.support.services import free_port

INCIDENT = SERVING_REGRESSION


def test_the_incident_changes_only_its_labelled_points():
    start = 100
    labelled = range(start + INCIDENT.lead_points,
                     start + INCIDENT.lead_points + INCIDENT.anomaly_points)
    for index in range(0, 300):
        normal = INCIDENT.normal(index)
        assert INCIDENT.value(index, None) == normal
        changed = INCIDENT.value(index, start) != normal
        assert changed == (index in labelled), index
    assert min(INCIDENT.value(index, start) / INCIDENT.normal(index)
               for index in labelled[6:-6]) > 2.5


def demo_detector_scores(warm_points: int) -> tuple[np.ndarray, int]:
    """The demo's model, as the demo configures it, on the series the demo plays: normal for
    warm_points, then the incident. Returns the scores and the first labelled point."""
    config = parse_config(load_yaml(DEMO_SIDECAR) | {"reader": {"url": "http://x:1"}}, "demo")
    (model_config,) = config.models.values()
    detector = build_detector(model_config, INCIDENT.step_seconds)
    total = warm_points + INCIDENT.lead_points + INCIDENT.anomaly_points + 60
    values = np.array([INCIDENT.value(index, warm_points) for index in range(total)])
    timestamps = 1_800_000_000.0 + INCIDENT.step_seconds * np.arange(total)
    scored = detector.update(SeriesBatch([(("series", "p99"),)], timestamps, values[None, :]))
    return scored.anomaly_score[0], warm_points + INCIDENT.lead_points


@pytest.mark.parametrize("warm_points", [60, 120, 400])
def test_the_demo_detector_alarms_at_the_labelled_anomaly_and_never_before(warm_points):
    """The demo starts its incident once the detector scores (after ~46 points), at any point
    of the wave; this is what it must then see."""
    scores, anomaly_start = demo_detector_scores(warm_points)
    assert np.isfinite(scores[anomaly_start - 5:]).all()
    alarms = np.flatnonzero(np.nan_to_num(scores) >= 1)
    assert alarms.size and alarms[0] == anomaly_start
    assert alarms.max() < anomaly_start + INCIDENT.anomaly_points + 5


def test_the_demo_adds_its_sidecar_sections_and_refuses_a_clash(tmp_path):
    ports = {"demo-target": free_port(), "slack-catcher": free_port()}
    with running_demo(tmp_path, ports, None) as demo:
        options = demo.stack_options(StackOptions(run_dir=tmp_path))
        merged = load_yaml(options.sidecar_config)
        shipped = load_yaml(DEFAULT_SIDECAR_CONFIG)
        for section, entries in load_yaml(DEMO_SIDECAR).items():
            assert merged[section] == {**shipped[section], **entries}
        assert options.scrape_intervals == {"demo_target": "1s"}
        assert options.extra_scrape_jobs == {"demo_target": demo.target.address}
        assert options.slack_url_file.read_text().strip() == demo.catcher.url("/slack")
        clashing = dump_yaml({**shipped, "models": {**shipped["models"], "demo": {}}},
                             tmp_path / "clash.yml")
        with pytest.raises(ValueError, match=r"clash\.yml: models \['demo'\] also in "):
            demo.stack_options(StackOptions(run_dir=tmp_path, sidecar_config=clashing))
