"""mad: expect the rolling median; the band is threshold robust sigmas (1.4826 x MAD).

The median and MAD ignore a few outliers in the window, so one spike neither drags the
expectation nor widens the band for the points after it (unlike zscore).
"""

from __future__ import annotations

import numpy as np

from anomaly_sidecar.models._rolling import RollingModel

MAD_TO_SIGMA = 1.4826
"""Makes the MAD a consistent estimator of the standard deviation for normal data."""


class MadModel(RollingModel):
    type_name = "mad"

    def centre_and_spread(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        median = np.nanmedian(windows, axis=2)
        mad = np.nanmedian(np.abs(windows - median[..., None]), axis=2)
        return median, MAD_TO_SIGMA * mad


MODEL_CLASS = MadModel
