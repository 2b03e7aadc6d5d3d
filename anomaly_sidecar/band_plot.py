"""The one picture of a forecast: y against its band, the points scored > 1 marked.

Drawn by `anomaly-sidecar backtest --plot` and embedded in `aiinfra-report`, so both show a
series the same way. matplotlib is imported here only (Agg: no display needed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np


def draw_band_plot(output: Path | BinaryIO, seconds: np.ndarray, y: np.ndarray,
                   yhat_lower: np.ndarray, yhat_upper: np.ndarray, anomaly_score: np.ndarray,
                   title: str | None = None, size_inches: tuple[float, float] = (14, 5),
                   legend_location: str = "upper left", yhat: np.ndarray | None = None) -> None:
    """Write a PNG to output (a path or a binary file object). legend_location "best" keeps the
    legend off the data but is slow for tens of thousands of points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moments = np.array([datetime.fromtimestamp(s, tz=UTC) for s in seconds])
    figure, axes = plt.subplots(figsize=size_inches)
    axes.fill_between(moments, yhat_lower, yhat_upper, color="tab:blue", alpha=0.2,
                      label="band")
    if yhat is not None:
        axes.plot(moments, yhat, color="tab:blue", linewidth=0.7, linestyle="--", label="yhat")
    axes.plot(moments, y, color="black", linewidth=0.7, label="y")
    alarms = np.nan_to_num(anomaly_score, nan=0.0) > 1.0
    axes.scatter(moments[alarms], y[alarms], color="red", s=14, zorder=3,
                 label="anomaly_score > 1")
    axes.legend(loc=legend_location)
    if title:
        axes.set_title(title, fontsize=10, loc="left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(output, dpi=100, format="png")
    plt.close(figure)
