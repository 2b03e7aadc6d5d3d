"""Turn a forecast band into the anomaly_score of the output contract.

score = (y - yhat) / (yhat_upper - yhat) when y >= yhat, else (yhat - y) / (yhat - yhat_lower):
0 is "as expected", <= 1 inside the band, > 1 outside. The same function serves the daemon, the
backtest and the NAB benchmark.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Direction = Literal["both", "above", "below"]

_TINY = 1e-12


def _suppressed(deviation: np.ndarray, direction: Direction,
                min_dev_from_expected: float) -> np.ndarray:
    """Where the rules force the score to 0: the side detection_direction ignores, and
    deviations smaller than min_dev_from_expected."""
    with np.errstate(invalid="ignore"):
        above = deviation >= 0
        ignored = np.zeros(np.shape(deviation), dtype=bool)
        if direction == "above":
            ignored = ~above
        elif direction == "below":
            ignored = above
        if min_dev_from_expected > 0:
            ignored = ignored | (np.abs(deviation) < min_dev_from_expected)
    return ignored


def _missing(y: np.ndarray, yhat: np.ndarray, yhat_lower: np.ndarray,
             yhat_upper: np.ndarray) -> np.ndarray:
    """Where y or the forecast is missing: such points are never scored (NaN, not 0)."""
    return ~(np.isfinite(y) & np.isfinite(yhat) & np.isfinite(yhat_lower)
             & np.isfinite(yhat_upper))


def anomaly_score(y: np.ndarray, yhat: np.ndarray, yhat_lower: np.ndarray, yhat_upper: np.ndarray,
                  direction: Direction = "both", min_dev_from_expected: float = 0.0) -> np.ndarray:
    """Elementwise score; NaN wherever y or the forecast is missing (never scored, never 0).

    A zero-width half band scores 0 at y == yhat and a very large finite number beyond it, so
    a flat, perfectly predicted series still alarms on the first change.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        deviation = y - yhat
        above = deviation >= 0
        half_width = np.where(above, yhat_upper - yhat, yhat - yhat_lower)
        half_width = np.maximum(half_width, _TINY)
        score = np.abs(deviation) / half_width
    score = np.where(_suppressed(deviation, direction, min_dev_from_expected), 0.0, score)
    return np.where(_missing(y, yhat, yhat_lower, yhat_upper), np.nan, score)


def score_forecast(y: np.ndarray, forecast, direction: Direction = "both",
                   min_dev_from_expected: float = 0.0) -> np.ndarray:
    """The score every caller publishes: the model's own score_hint when it gives one (with the
    same direction and min_dev rules applied), else the band formula above. A hinted score is
    kept where y happens to equal yhat: the model, not the band, says how unusual that is."""
    if forecast.score_hint is None:
        return anomaly_score(y, forecast.yhat, forecast.yhat_lower, forecast.yhat_upper,
                             direction, min_dev_from_expected)
    suppressed = _suppressed(y - forecast.yhat, direction, min_dev_from_expected)
    hint = np.where(_missing(y, forecast.yhat, forecast.yhat_lower, forecast.yhat_upper),
                    np.nan, forecast.score_hint)
    return np.where(suppressed & ~np.isnan(hint), 0.0, hint)
