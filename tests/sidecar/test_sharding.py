"""Sharded replicas: the hash that assigns series, and three real sidecar processes sharing
one backend's series, checked against an unsharded sidecar scoring the same data."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import numpy as np
import yaml

from anomaly_sidecar.config import ShardConfig, parse_config
from anomaly_sidecar.daemon import Sidecar, build_jobs
from anomaly_sidecar.shard import Shard, series_hash, shard_of
from tests.sidecar.helpers import (
    minimal_config,
    remote_write,
    samples,
    sidecar_process,
    total,
)
from tests.sidecar.test_remote_write import (
    raw_samples,
    sidecar_config,
    source_data,
    zscore_body,
)
from tests.support.services import (
    free_port,
    prometheus,
    scrape_config,
    wait_for,
    wait_http_ok,
)

KEYS = [(("gpu", str(index % 8)), ("instance", f"node-{index // 8}:10100"))
        for index in range(10_000)]
REPLICAS = 3
SERIES = [f"s{index:02d}" for index in range(24)]
HISTORY_SECONDS = 45.0
"""What the test's model reads of a series at first sight: window 10s + warm_up 5s + the
30 errors a series needs at a 1s step (Job.history_seconds)."""
BODY = zscore_body(window="10s", warm_up="5s")


def test_every_series_has_one_shard_and_shards_are_balanced():
    for count in (1, 2, 3, 4, 8):
        shards = [Shard(index, count) for index in range(count)]
        owners = [[shard.index for shard in shards if shard.owns(key)] for key in KEYS]
        assert all(len(owner) == 1 for owner in owners)
        sizes = np.bincount([owner[0] for owner in owners], minlength=count)
        assert (abs(sizes - len(KEYS) / count) < 0.1 * len(KEYS) / count).all(), sizes


def test_growing_the_count_moves_only_the_series_the_new_shard_takes():
    for count in (1, 2, 3, 4, 7):
        before = np.array([shard_of(key, count) for key in KEYS])
        after = np.array([shard_of(key, count + 1) for key in KEYS])
        moved = before != after
        assert (after[moved] == count).all(), "a moved series goes to the new shard only"
        assert abs(moved.mean() - 1 / (count + 1)) < 0.02, moved.mean()


def test_the_shard_of_a_series_is_the_same_everywhere_and_always():
    """Pinned values: a change of the hash would reshuffle every deployment's series."""
    key = (("gpu", "3"), ("instance", "node-7:10100"))
    assert series_hash(key) == 16321331298054375864
    assert [shard_of(key, count) for count in (1, 2, 3, 4, 8)] == [0, 1, 1, 1, 1]
    assert series_hash((("a", "bc"),)) != series_hash((("ab", "c"),))


def series_of(metrics_url: str, name: str = "anomaly_score") -> set[str]:
    return {labels["series"] for labels, _ in samples(metrics_url, name)}


def test_three_replicas_score_every_series_once_and_a_restart_changes_nothing_else(tmp_path):
    now = math.floor(time.time())
    # Series start 15 s ago: every process's first read (the last HISTORY_SECONDS) then sees
    # each series from its first sample, so the unsharded reference and the replicas start
    # from the same state and must compute the same scores.
    data = source_data(SERIES, now - 15, now + 300, seed=3)
    shard_of_series = {name: shard_of((("series", name),), REPLICAS) for name in SERIES}
    with prometheus(tmp_path / "prometheus", scrape_config({})) as backend, \
            contextlib.ExitStack() as stack:
        remote_write(backend.url, data)
        writer = (f"writer:\n  pull: {{}}\n  remote_write:\n    url: {backend.url}/api/v1/write\n"
                  f"    max_backoff: 1s\n")

        def start(name: str, template: str, args=(), env=None, wait=False):
            port = free_port()
            path = sidecar_config(tmp_path / f"{name}.yml", backend.url, port, writer, template,
                                  BODY)
            return sidecar_process(path, port, tmp_path / f"{name}-state", wait_ready=wait,
                                   args=args, env=env)

        replica_args = [
            (["--shard-index", "0", "--shard-count", "3"], None),
            (["--shard-index", "1", "--shard-count", "3"], None),
            ([], {"ANOMALY_SIDECAR_SHARD_INDEX": "2", "ANOMALY_SIDECAR_SHARD_COUNT": "3"}),
        ]
        reference = stack.enter_context(start("reference", "ref_{name}"))
        replicas = [stack.enter_context(start(f"replica{index}", "{name}", args, env))
                    for index, (args, env) in enumerate(replica_args)]
        outputs = [(reference, "ref_anomaly_score")] + [(replica, "anomaly_score")
                                                        for replica in replicas]
        for process, name in outputs:
            wait_http_ok(process.metrics_url, 60, process.process)
            wait_for(lambda process=process, name=name: series_of(process.metrics_url, name),
                     60, message=f"scores on {process.metrics_url}")
        assert time.time() < now + HISTORY_SECONDS, "the processes started too late to compare"
        wait_for(lambda: series_of(reference.metrics_url, "ref_anomaly_score") == set(SERIES),
                 30, message="the reference scores every series")
        owned = []
        for index, replica in enumerate(replicas):
            expected = {name for name in SERIES if shard_of_series[name] == index}
            wait_for(lambda replica=replica, expected=expected:
                     series_of(replica.metrics_url) == expected, 30,
                     message=f"replica {index} publishes its shard")
            # state for its shard only: the series it keeps are the series it publishes
            assert total(replica.metrics_url, "anomaly_sidecar_series") == len(expected)
            assert samples(replica.metrics_url, "anomaly_sidecar_shard_info")[0][0] == {
                "index": str(index), "count": "3"}
            owned.append(expected)
        assert set().union(*owned) == set(SERIES)
        assert sum(len(shard) for shard in owned) == len(SERIES), "no series scored twice"

        others = [replicas[0], replicas[2]]
        runs_before = [total(other.metrics_url, "anomaly_sidecar_model_runs_total")
                       for other in others]
        restarted = replicas[1]
        restarted.process.send_signal(signal.SIGTERM)
        restarted.process.wait(20)
        stopped_at = time.time()
        time.sleep(3)
        for index, other in zip((0, 2), others, strict=True):
            assert series_of(other.metrics_url) == owned[index], "nobody takes over a shard"
        again = stack.enter_context(start("replica1", "{name}", replica_args[1][0], wait=True))
        restarted_at = time.time()
        assert "restored" in again.log()
        wait_for(lambda: series_of(again.metrics_url) == owned[1], 30,
                 message="the restarted replica publishes its shard again")
        time.sleep(3)
        for index, other, before in zip((0, 2), others, runs_before, strict=True):
            assert series_of(other.metrics_url) == owned[index]
            assert total(other.metrics_url, "anomaly_sidecar_model_runs_total") > before
            assert total(other.metrics_url, "anomaly_sidecar_model_run_errors_total") == 0
        scored = raw_samples(backend.url, "anomaly_score", "5m")
        expected = raw_samples(backend.url, "ref_anomaly_score", "5m")
    assert set(scored) == set(SERIES) == set(expected)
    for name in SERIES:
        stamps, scores = scored[name]
        reference_stamps, reference_scores = expected[name]
        end = min(stamps[-1], reference_stamps[-1])
        common = reference_stamps[reference_stamps <= end]
        assert (np.diff(stamps) == 1).all(), f"{name}: a gap in the replica's scores"
        assert stamps[0] < stopped_at and end > restarted_at, "the restart is compared"
        # the replicas' scores are the unsharded sidecar's, point for point, restart or not
        np.testing.assert_array_equal(stamps[stamps <= end], common)
        np.testing.assert_allclose(scores[stamps <= end],
                                   reference_scores[reference_stamps <= end], rtol=1e-9)


def test_state_restored_under_another_count_keeps_only_this_shards_series(tmp_path):
    """After growing the count, a replica's saved state still holds the series the new shard
    took: they are dropped at restore, not kept until a fit_window of absence."""
    config = parse_config(yaml.safe_load(minimal_config("http://127.0.0.1:9", free_port())),
                          "inline")
    sidecar = Sidecar(config, tmp_path / "c.yml", tmp_path, shard_override=ShardConfig(1, 4))
    job = build_jobs(sidecar.config, tmp_path)["main"][0]
    job.detector.rows(KEYS[:400])
    sidecar._forget_other_shards(job)
    assert job.detector.keys == [key for key in KEYS[:400] if shard_of(key, 4) == 1]
    assert 60 < len(job.detector.keys) < 140


def test_the_documented_statefulset_runs_one_shard_per_replica(tmp_path):
    """docs/scaling.md: the StatefulSet's replicas and shard count agree, the shard index is
    the pod's ordinal, and the ConfigMap's sidecar config is valid."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    documents = {document["kind"]: document for document in yaml.safe_load_all(block)}
    spec = documents["StatefulSet"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable for variable in container["env"]}
    assert int(env["ANOMALY_SIDECAR_SHARD_COUNT"]["value"]) == spec["replicas"]
    assert env["ANOMALY_SIDECAR_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    raw = yaml.safe_load(documents["ConfigMap"]["data"]["sidecar.yml"])
    web_config = tmp_path / "web.yml"
    web_config.write_text("{}\n")
    raw["server"]["web_config_file"] = str(web_config)
    config = parse_config(raw, "docs/scaling.md")
    assert config.writer.remote_write is not None and not config.writer.pull
