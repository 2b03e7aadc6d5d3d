"""zscore: expect the rolling mean; the band is threshold standard deviations of the window."""

from __future__ import annotations

import numpy as np

from anomaly_sidecar.models._rolling import RollingModel


class ZScoreModel(RollingModel):
    type_name = "zscore"

    def centre_and_spread(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.nanmean(windows, axis=2), np.nanstd(windows, axis=2)


MODEL_CLASS = ZScoreModel
