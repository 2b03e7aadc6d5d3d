"""`type: lstm`: a Keras LSTM forecaster; its errors go through the shared calibration.

Keras is imported lazily inside this module (and only the Keras 3 API is used), so the exporter
and configs without `type: lstm` never load a deep-learning framework, and the same code runs on
KERAS_BACKEND=tensorflow (the shipped default) or torch. Keras uses a GPU whenever its backend
sees one; which device was used is logged at the first fit.

Forecast: one step ahead from the previous `window` of points (a duration: 32 points at a
1-minute step), in units normalised per series with the mean and standard deviation of the fit
window. By default one network is shared by all series of a query (trained on the windows of
all of them); `per_series: true` trains one network per series instead. Each series' streaming
state is its last window of values; inference gathers the windows of every series and new point
into one array and runs one compiled forward pass (predict_on_batch), never a Python loop over
series. A window's gaps are filled with its last earlier value inside the window (the series'
mean before the first), so a window's forecast depends on that window alone.

The deviation the calibration scores is the forecast error in fit-window standard deviations.
The raw band (`calibration: raw`) is Telemanom's (Hundman et al., KDD 2018): absolute errors
smoothed with an EWMA, and a threshold eps on them chosen at fit time among mean + z * std
(z in 2..10) of the fit window's smoothed errors by the nonparametric criterion that best
separates the values above it; the band is drawn where the smoothed error would reach eps.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from anomaly_sidecar.durations import span_points
from anomaly_sidecar.models._fill import forward_filled
from anomaly_sidecar.models.base import (
    Duration,
    Model,
    ModelParamError,
    ModelParams,
    Residuals,
    SeriesBatch,
    SeriesKey,
    StreamState,
)

log = logging.getLogger(__name__)

_SHARED = "shared"
_STATE_FILE = "lstm_state.json"
_MIN_STD = 1e-6
_Z_CHOICES = np.arange(2.0, 10.5, 0.5)
_INFERENCE_BATCH = 65536
_device_logged = False


def quiet_framework_logs(verbose: bool = False) -> None:
    """TensorFlow prints pages of C++ and oneDNN notices on import; keep them out of a
    sidecar's log unless --verbose. Must run before the framework is imported."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        # retracing notices etc. come through Python logging
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _keras() -> Any:
    quiet_framework_logs(log.isEnabledFor(logging.DEBUG))
    import keras

    return keras


def compute_device() -> str:
    """The device Keras' backend computes on, e.g. 'tensorflow on GPU:0' or 'torch on cpu'."""
    keras = _keras()
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"torch on cuda:0 ({torch.cuda.get_device_name(0)})"
        return "torch on cpu"
    devices = keras.distribution.list_devices()
    return f"{backend} on {devices[0] if devices else 'cpu'}"


@dataclass(frozen=True)
class LstmParams(ModelParams):
    window: Duration = 32 * 60.0
    """How far back each forecast looks (the network's input length at the query's step)."""
    units: int = 32
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 0.005
    per_series: bool = False
    """One network per series instead of one shared by the query's series."""
    fit_history: Duration = 7 * 86400.0
    """How much of the newest history a fit trains on."""
    max_train_windows: int = 20000
    """Most recent windows kept for a fit (bounds fit time on long histories)."""
    error_smoothing: Duration = 3 * 60.0
    """EWMA span of the absolute errors for the raw band (Telemanom smooths them)."""
    min_band: float = 0.1
    """Smallest raw threshold on the smoothed error, in fit-window standard deviations."""
    seed: int = 0

    def validate(self) -> None:
        for key in ("units", "layers", "epochs", "batch_size", "max_train_windows"):
            if getattr(self, key) < 1:
                raise ModelParamError(key, "must be at least 1")
        for key in ("window", "fit_history", "error_smoothing"):
            if getattr(self, key) <= 0:
                raise ModelParamError(key, "must be a positive duration")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelParamError("dropout", "must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ModelParamError("learning_rate", "must be > 0")
        if self.min_band <= 0:
            raise ModelParamError("min_band", "must be > 0")


@functools.lru_cache(maxsize=200_000)
def _key_name(key: SeriesKey) -> str:
    """The series' name in state files (JSON); cached, as inference looks up every series."""
    return json.dumps(key)


def _filled_windows(values: np.ndarray) -> np.ndarray:
    """Windows (last axis) with each gap filled by the last earlier value inside the same
    window, and leading gaps by 0 (the normalised mean)."""
    return np.nan_to_num(forward_filled(values), nan=0.0)


def _ewma(values: np.ndarray, alpha: float, level: np.ndarray) -> np.ndarray:
    """Causal EWMA along columns from the given starting level (NaN skipped: the level carries
    over); updates `level` in place and returns every column's level."""
    smoothed = np.full_like(values, np.nan)
    for column in range(values.shape[1]):
        current = values[:, column]
        level[...] = np.where(np.isfinite(current),
                              np.where(np.isfinite(level), alpha * current + (1 - alpha) * level,
                                       current),
                              level)
        smoothed[:, column] = level
    return smoothed


def telemanom_thresholds(smoothed_errors: np.ndarray, floor: float) -> np.ndarray:
    """Hundman et al.'s nonparametric threshold per row of (n_series, n_errors), NaN ignored:
    the eps = mean + z * std maximising (d_mean/mean + d_std/std) / (n_above + n_sequences^2),
    where d_* is how much mean and std drop when the values above eps are removed. Rows with
    nothing to separate get z = 10. Never below floor. Vectorised over series (one pass per
    z), so thresholds for 10,000 series cost a few array operations."""
    errors = np.atleast_2d(np.asarray(smoothed_errors, dtype=float))
    finite = np.isfinite(errors)
    count = finite.sum(axis=1)
    filled = np.where(finite, errors, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / count
        std = np.sqrt(np.maximum((filled ** 2).sum(axis=1) / count - mean ** 2, 0.0))
        best_epsilon = mean + _Z_CHOICES[-1] * std
        best_objective = np.zeros(len(errors))
        for z in _Z_CHOICES:
            epsilon = mean + z * std
            above = finite & (errors > epsilon[:, None])
            below = finite & ~above
            n_above, n_below = above.sum(axis=1), below.sum(axis=1)
            below_mean = np.where(below, errors, 0.0).sum(axis=1) / n_below
            below_std = np.sqrt(np.maximum(
                (np.where(below, errors, 0.0) ** 2).sum(axis=1) / n_below - below_mean ** 2, 0.0))
            starts = np.diff(above.astype(np.int8), axis=1, prepend=0) == 1
            n_sequences = starts.sum(axis=1)
            objective = ((mean - below_mean) / mean + (std - below_std) / std) \
                / (n_above + n_sequences ** 2)
            better = (n_above > 0) & (n_below > 0) & (std > 0) & (objective > best_objective)
            best_epsilon = np.where(better, epsilon, best_epsilon)
            best_objective = np.where(better, objective, best_objective)
    return np.where(np.isfinite(best_epsilon), np.maximum(best_epsilon, floor), floor)


@dataclass
class _SeriesState:
    """Per-series normalisation and raw band threshold, learned at fit time."""

    mean: float
    std: float
    epsilon: float


class LstmModel(Model):
    """See the module docstring."""

    type_name = "lstm"
    Params = LstmParams
    params: LstmParams
    learns = True

    def __init__(self, params: LstmParams, step_seconds: float) -> None:
        super().__init__(params, step_seconds)
        self._networks: dict[str, Any] = {}
        self._series: dict[str, _SeriesState] = {}

    @property
    def window_points(self) -> int:
        return max(2, span_points(self.params.window, self.step_seconds))

    @property
    def _alpha(self) -> float:
        return 2.0 / (span_points(self.params.error_smoothing, self.step_seconds) + 1.0)

    @property
    def fit_seconds(self) -> float:
        return self.params.fit_history

    @property
    def history_seconds(self) -> float:
        return self.window_points * self.step_seconds

    def can_forecast(self, key: SeriesKey) -> bool:
        return _key_name(key) in self._series

    # -- fitting ---------------------------------------------------------------------------

    def _build_network(self) -> Any:
        keras = _keras()
        keras.utils.set_random_seed(self.params.seed)
        inputs = keras.Input(shape=(self.window_points, 1))
        hidden = inputs
        for layer in range(self.params.layers):
            hidden = keras.layers.LSTM(self.params.units, dropout=self.params.dropout,
                                       return_sequences=layer < self.params.layers - 1)(hidden)
        network = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        network.compile(optimizer=keras.optimizers.Adam(self.params.learning_rate), loss="mse")
        return network

    def _train(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Fit (or keep training) one network; a refit starts from the previous weights, so
        regular refits are a few cheap epochs rather than training from scratch."""
        global _device_logged
        keras = _keras()
        network = self._networks.get(name) or self._build_network()
        if not _device_logged:
            log.info("lstm: training on %s", compute_device())
            _device_logged = True
        keras.utils.set_random_seed(self.params.seed)
        network.fit(inputs[..., None], targets[:, None], epochs=self.params.epochs,
                    batch_size=self.params.batch_size, shuffle=True, verbose=0)
        self._networks[name] = network

    def fit(self, batch: SeriesBatch) -> None:
        values = np.where(np.isfinite(batch.values), batch.values, np.nan)
        window = self.window_points
        if values.shape[1] <= window + 1:
            return
        states = {}
        normalised = np.full_like(values, np.nan)
        for row, key in enumerate(batch.keys):
            finite = values[row][np.isfinite(values[row])]
            if finite.size <= window:
                continue
            state = _SeriesState(float(finite.mean()), max(float(finite.std()), _MIN_STD), 0.0)
            states[_key_name(key)] = state
            normalised[row] = (values[row] - state.mean) / state.std
        rows = [row for row, key in enumerate(batch.keys) if _key_name(key) in states]
        if not rows:
            return
        windows = sliding_window_view(normalised[:, :-1], window, axis=1)
        targets = normalised[:, window:]
        usable = np.isfinite(windows).all(axis=2) & np.isfinite(targets)
        groups = ({_key_name(batch.keys[row]): [row] for row in rows} if self.params.per_series
                  else {_SHARED: rows})
        for name, group in groups.items():
            keep = self._recent_windows(usable[group])
            self._train(name, windows[group][usable[group]][keep],
                        targets[group][usable[group]][keep])
        self._series.update(states)
        # the raw band's threshold: Telemanom's criterion over the fit window's smoothed errors
        keys = [batch.keys[row] for row in rows]
        forecasts = self._forecast(keys, _filled_windows(windows[rows]))
        errors = np.abs(targets[rows] - forecasts)
        smoothed = _ewma(errors, self._alpha, np.full(len(rows), np.nan))
        epsilons = telemanom_thresholds(smoothed, self.params.min_band)
        for key, epsilon in zip(keys, epsilons, strict=True):
            self._series[_key_name(key)].epsilon = float(epsilon)

    def _recent_windows(self, usable: np.ndarray) -> np.ndarray:
        """Indices (into the flattened usable windows) of the most recent max_train_windows,
        taken evenly across series so one long series does not crowd out the others."""
        per_series = max(1, self.params.max_train_windows // usable.shape[0])
        ranks = np.cumsum(usable[:, ::-1], axis=1)[:, ::-1]  # 1 = most recent usable window
        return np.flatnonzero(ranks[usable] <= per_series)

    # -- inference ---------------------------------------------------------------------------

    def _forecast(self, keys: Sequence[SeriesKey], windows: np.ndarray) -> np.ndarray:
        """Normalised forecasts for normalised, gap-filled windows (n_series, n_windows,
        window): one batched forward pass per network."""
        n_series, n_windows, window = windows.shape
        forecasts = np.full((n_series, n_windows), np.nan)
        groups: dict[str, list[int]] = {}
        for row, key in enumerate(keys):
            name = _key_name(key) if self.params.per_series else _SHARED
            if name in self._networks:
                groups.setdefault(name, []).append(row)
        for name, rows in groups.items():
            flat = windows[rows].reshape(-1, window, 1).astype("float32")
            if not len(flat):
                continue
            outputs = np.concatenate([
                np.asarray(self._networks[name].predict_on_batch(flat[start:start
                           + _INFERENCE_BATCH])).reshape(-1)
                for start in range(0, len(flat), _INFERENCE_BATCH)])
            forecasts[rows] = outputs.reshape(len(rows), n_windows)
        return forecasts

    def new_state(self, n_series: int) -> StreamState:
        return {"window": np.full((n_series, self.window_points), np.nan),
                "smoothed": np.full(n_series, np.nan)}

    def advance(self, state: StreamState, keys: Sequence[SeriesKey], timestamps: np.ndarray,
                values: np.ndarray) -> Residuals:
        stats = [self._series[_key_name(key)] for key in keys]
        means = np.array([series.mean for series in stats])[:, None]
        stds = np.array([series.std for series in stats])[:, None]
        epsilons = np.array([series.epsilon for series in stats])[:, None]
        history = np.concatenate([state["window"], values], axis=1)
        state["window"] = history[:, -self.window_points:]
        normalised = (history - means) / stds
        windows = sliding_window_view(normalised[:, :-1], self.window_points, axis=1)
        forecasts = self._forecast(keys, _filled_windows(windows))
        errors = np.abs(normalised[:, self.window_points:] - forecasts)
        previous = np.nan_to_num(state["smoothed"], nan=0.0)[:, None]
        smoothed = _ewma(errors, self._alpha, state["smoothed"])
        earlier = np.concatenate([previous, np.nan_to_num(smoothed[:, :-1], nan=0.0)], axis=1)
        alpha = self._alpha
        raw_half_width = np.maximum((epsilons - (1 - alpha) * earlier) / alpha, 0.0) * stds
        return Residuals(yhat=forecasts * stds + means, unit=np.broadcast_to(stds, values.shape),
                         raw_half_width=raw_half_width)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        names = sorted(self._networks)
        for index, name in enumerate(names):
            self._networks[name].save(directory / f"network_{index}.keras")
        state = {"params": json.loads(json.dumps(asdict(self.params))), "networks": names,
                 "series": {name: vars(state) for name, state in self._series.items()}}
        (directory / _STATE_FILE).write_text(json.dumps(state))

    def load(self, directory: Path) -> None:
        keras = _keras()
        state = json.loads((directory / _STATE_FILE).read_text())
        if state["params"] != json.loads(json.dumps(asdict(self.params))):
            raise ValueError("saved parameters differ from the configured ones")
        self._networks = {name: keras.models.load_model(directory / f"network_{index}.keras")
                          for index, name in enumerate(state["networks"])}
        self._series = {name: _SeriesState(**values) for name, values in state["series"].items()}


MODEL_CLASS = LstmModel
