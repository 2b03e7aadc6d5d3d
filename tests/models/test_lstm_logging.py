"""The LSTM says which device it trains on, once, and keeps TensorFlow's own noise out of the
sidecar's log unless the sidecar runs verbose."""

import logging
import os
import subprocess
import sys

import pytest

from anomaly_sidecar.models import lstm
from tests.models.test_lstm import batch, sine
from tests.models.test_lstm import lstm as small_lstm


def test_training_device_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(lstm, "_device_logged", False)
    caplog.set_level(logging.INFO, logger=lstm.__name__)
    model = small_lstm(epochs=1)
    model.fit(batch([sine(200)]))
    model.fit(batch([sine(200, seed=1)]))
    device_lines = [r.getMessage() for r in caplog.records if "training on" in r.getMessage()]
    assert device_lines == [f"lstm: training on {lstm.compute_device()}"]


PROBE = """
import logging, os, sys
logging.basicConfig(level=logging.DEBUG if sys.argv[1] == "verbose" else logging.INFO)
from anomaly_sidecar.models import lstm
lstm._keras()
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset"))
"""


@pytest.mark.parametrize(("mode", "expected_level"), [("quiet", "3"), ("verbose", "unset")])
def test_framework_log_level_follows_verbose(mode, expected_level):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == expected_level
    if mode == "quiet":
        assert "oneDNN" not in result.stderr
