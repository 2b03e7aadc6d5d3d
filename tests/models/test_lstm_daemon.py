"""The daemon keeps scoring while an LSTM refit is under way (asserted while the fit is held
open), against a real Prometheus scraping a target whose value the test sets."""

import math
import threading
import time

import pytest
import yaml

from anomaly_sidecar.config import parse_config
from anomaly_sidecar.daemon import Sidecar
from anomaly_sidecar.models.lstm import LstmModel
from scripts.demo_target import controllable_target
from tests.sidecar.helpers import samples, total
from tests.support.services import free_port, prometheus, scrape_config, wait_for

CONFIG = """\
reader:
  url: {url}
queries:
  test:
    expr: test_value
    step: 1s
models:
  lstm:
    type: lstm
    window: 4s
    units: 4
    epochs: 1
    warm_up: 5s
schedulers:
  main:
    fit_every: 2s
    fit_window: 10m
    infer_every: 500ms
    models: [lstm]
server:
  listen_address: 127.0.0.1:{port}
"""


class HeldRefits:
    """Lets fits that produce a usable model through once, then holds every later fit open
    (after its real work) until released, so the test knows a refit is in progress."""

    def __init__(self) -> None:
        self.first_done = threading.Event()
        self.refit_running = threading.Event()
        self.release = threading.Event()
        self.original_fit = LstmModel.fit

    def fit(self, model: LstmModel, batch) -> None:
        self.original_fit(model, batch)
        if not self.first_done.is_set():
            if batch.keys and model.can_forecast(batch.keys[0]):
                self.first_done.set()
            return
        self.refit_running.set()
        self.release.wait(60)


@pytest.mark.timeout(180)
def test_scores_keep_being_published_while_a_refit_runs(tmp_path, monkeypatch):
    held = HeldRefits()
    monkeypatch.setattr(LstmModel, "fit", lambda model, batch: held.fit(model, batch))
    with controllable_target() as target, prometheus(
            tmp_path / "prom", scrape_config({"target": target.address})) as prom:
        start = time.monotonic()

        def feed() -> None:
            while not stop_feeding.is_set():
                target.set("a", 50 + 10 * math.sin((time.monotonic() - start) / 3))
                time.sleep(0.2)

        stop_feeding = threading.Event()
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        port = free_port()
        raw = CONFIG.format(url=prom.url, port=port)
        sidecar = Sidecar(parse_config(yaml.safe_load(raw), "test"), tmp_path / "c.yml", None)
        sidecar.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            assert held.first_done.wait(90), "the first fit never produced a model"
            assert held.refit_running.wait(30), "no refit started"
            fits_before = total(metrics_url, "anomaly_sidecar_model_runs_total", stage="fit")
            infers_before = total(metrics_url, "anomaly_sidecar_model_runs_total",
                                  stage="infer")
            seen_y = set()

            def scored_while_refitting() -> bool:
                for _, value in samples(metrics_url, "y", series="a"):
                    seen_y.add(value)
                scores = samples(metrics_url, "anomaly_score", series="a")
                return (total(metrics_url, "anomaly_sidecar_model_runs_total", stage="infer")
                        >= infers_before + 4 and len(seen_y) >= 3
                        and bool(scores) and math.isfinite(scores[0][1]))

            wait_for(scored_while_refitting, timeout_seconds=30)
            # the refit is still held open: no fit has completed meanwhile
            assert held.refit_running.is_set() and not held.release.is_set()
            assert total(metrics_url, "anomaly_sidecar_model_runs_total",
                         stage="fit") == fits_before
            held.release.set()
            wait_for(lambda: total(metrics_url, "anomaly_sidecar_model_runs_total",
                                   stage="fit") > fits_before, timeout_seconds=30)
        finally:
            held.release.set()
            stop_feeding.set()
            sidecar.stop()
