"""Suite-wide settings: TensorFlow stays quiet, and every test runs in its own temp dir."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
