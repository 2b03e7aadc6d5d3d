"""Forward-fill along the last axis, the one gap filler the models share (ARIMA's estimation,
the LSTM's input windows)."""

from __future__ import annotations

import numpy as np


def forward_filled(values: np.ndarray) -> np.ndarray:
    """Non-finite values replaced by the last finite one before them on the last axis (leading
    gaps stay NaN): estimation and windows need contiguous values, and a held value is the
    least invented filler."""
    values = np.where(np.isfinite(values), values, np.nan)
    last_valid = np.where(np.isfinite(values), np.arange(values.shape[-1]), -1)
    np.maximum.accumulate(last_valid, axis=-1, out=last_valid)
    filled = np.take_along_axis(values, np.maximum(last_valid, 0), axis=-1)
    return np.where(last_valid >= 0, filled, np.nan)
