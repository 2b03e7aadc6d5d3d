"""`type: lstm`: a Keras LSTM forecaster with Telemanom's error-based band.

Keras is imported lazily inside this module (and only the Keras 3 API is used), so the exporter
and configs without `type: lstm` never load a deep-learning framework, and the same code runs on
KERAS_BACKEND=tensorflow (the shipped default) or torch. Keras uses a GPU whenever its backend
sees one; which device was used is logged at the first fit.

Forecast: one step ahead from the previous `window` points, in units normalised per series with
the mean and standard deviation of the fit window. By default one network is shared by all
series of a query (trained on the windows of all of them, so a new series is forecast at once);
`per_series: true` trains one network per series instead. Inference gathers the windows of every
series and target into one array and runs one compiled forward pass (predict_on_batch), never a
Python loop over series.

Band (Hundman et al., KDD 2018, "Telemanom"): absolute errors are smoothed with an EWMA, and the
threshold eps on the smoothed error is chosen among mean + z * std (z in 2..10) of the recent
smoothed errors by the nonparametric criterion that best separates the values above it. A point
is outside the band when its smoothed error exceeds eps, and the band is drawn exactly there,
so scoring.py's band formula gives > 1 precisely for those points.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_sidecar.models.base import (
    Forecast,
    Model,
    ModelParamError,
    ModelParams,
    SeriesBatch,
    SeriesKey,
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
    window: int = 32
    """Past points each forecast sees."""
    units: int = 32
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 0.005
    per_series: bool = False
    """One network per series instead of one shared by the query's series."""
    max_train_windows: int = 20000
    """Most recent windows kept for a fit (bounds fit time on long fit windows)."""
    error_history: int = 256
    """Recent forecast errors the band's threshold is chosen from."""
    error_smoothing: int = 3
    """EWMA span of the absolute errors (Telemanom smooths errors before thresholding)."""
    min_band: float = 0.1
    """Smallest threshold on the smoothed error, in fit-window standard deviations, so a
    near-perfect forecast does not alarm on noise it never saw."""
    seed: int = 0

    def validate(self) -> None:
        for key in ("window", "units", "layers", "epochs", "batch_size", "max_train_windows",
                    "error_smoothing"):
            if getattr(self, key) < 1:
                raise ModelParamError(key, "must be at least 1")
        if self.error_history < 10:
            raise ModelParamError("error_history", "must be at least 10")
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


def _normalised_windows(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of `window` points and the point after each, per series, shape
    (n_series, n_windows, window) and (n_series, n_windows)."""
    inputs = np.lib.stride_tricks.sliding_window_view(values[:, :-1], window, axis=1)
    return inputs, values[:, window:]


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Gaps take the last finite value; leading gaps become 0 (the normalised mean)."""
    columns = np.where(np.isfinite(values), np.arange(values.shape[1]), 0)
    columns = np.maximum.accumulate(columns, axis=1)
    filled = values[np.arange(values.shape[0])[:, None], columns]
    return np.where(np.isfinite(filled), filled, 0.0)


def _ewma(values: np.ndarray, span: int) -> np.ndarray:
    """Causal EWMA along columns (NaN skipped: the previous level carries over)."""
    alpha = 2.0 / (span + 1.0)
    smoothed = np.full_like(values, np.nan)
    level = np.full(values.shape[0], np.nan)
    for column in range(values.shape[1]):
        current = values[:, column]
        level = np.where(np.isfinite(current),
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
    """Per-series normalisation (from the fit window) and band threshold at fit time."""

    mean: float
    std: float
    epsilon: float


class LstmModel(Model):
    """See the module docstring."""

    type_name = "lstm"
    Params = LstmParams
    params: LstmParams

    def __init__(self, params: ModelParams) -> None:
        super().__init__(params)
        self._networks: dict[str, Any] = {}
        self._series: dict[str, _SeriesState] = {}

    @property
    def context_points(self) -> int:
        return self.params.window + self.params.error_history

    @property
    def fit_points(self) -> int:
        """A fit trains on at most the newest max_train_windows windows of a series."""
        return self.params.max_train_windows + self.params.window + 1

    def can_predict(self, key: SeriesKey) -> bool:
        if self.params.per_series:
            return _key_name(key) in self._networks
        return _SHARED in self._networks

    # -- fitting ---------------------------------------------------------------------------

    def _build_network(self) -> Any:
        keras = _keras()
        keras.utils.set_random_seed(self.params.seed)
        inputs = keras.Input(shape=(self.params.window, 1))
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
        window = self.params.window
        if values.shape[1] <= window + 1:
            return
        states = {}
        normalised = np.empty_like(values)
        for row, key in enumerate(batch.keys):
            finite = values[row][np.isfinite(values[row])]
            if finite.size <= window:
                normalised[row] = np.nan
                continue
            state = _SeriesState(float(finite.mean()), max(float(finite.std()), _MIN_STD), 0.0)
            states[_key_name(key)] = state
            normalised[row] = (values[row] - state.mean) / state.std
        inputs, targets = _normalised_windows(normalised, window)
        usable = np.isfinite(inputs).all(axis=2) & np.isfinite(targets)
        rows = [row for row, key in enumerate(batch.keys) if _key_name(key) in states]
        if not rows:
            return
        groups = ({_key_name(batch.keys[row]): [row] for row in rows} if self.params.per_series
                  else {_SHARED: rows})
        for name, group in groups.items():
            keep = self._recent_windows(usable[group])
            self._train(name, inputs[group][usable[group]][keep],
                        targets[group][usable[group]][keep])
        self._series.update(states)
        recent = SeriesBatch([batch.keys[row] for row in rows], batch.timestamps,
                             values[rows]).tail(self.context_points + 1)
        epsilons = telemanom_thresholds(self._smoothed_errors(recent), self.params.min_band)
        for key, epsilon in zip(recent.keys, epsilons, strict=True):
            self._series[_key_name(key)].epsilon = float(epsilon)

    def _recent_windows(self, usable: np.ndarray) -> np.ndarray:
        """Indices (into the flattened usable windows) of the most recent max_train_windows,
        taken evenly across series so one long series does not crowd out the others."""
        per_series = max(1, self.params.max_train_windows // usable.shape[0])
        ranks = np.cumsum(usable[:, ::-1], axis=1)[:, ::-1]  # 1 = most recent usable window
        return np.flatnonzero(ranks[usable] <= per_series)

    # -- inference ---------------------------------------------------------------------------

    def _forecast_normalised(self, keys: Sequence[SeriesKey], normalised: np.ndarray
                             ) -> np.ndarray:
        """Forecasts (normalised) for every column from `window` on, all series in one
        batched forward pass per network."""
        window = self.params.window
        n_series, n_points = normalised.shape
        forecasts = np.full((n_series, n_points), np.nan)
        if n_points <= window:
            return forecasts
        inputs = np.lib.stride_tricks.sliding_window_view(
            _forward_fill(normalised)[:, :-1], window, axis=1)
        groups: dict[str, list[int]] = {}
        for row, key in enumerate(keys):
            if self.can_predict(key):
                name = _key_name(key) if self.params.per_series else _SHARED
                groups.setdefault(name, []).append(row)
        for name, rows in groups.items():
            flat = inputs[rows].reshape(-1, window, 1).astype("float32")
            outputs = np.concatenate([
                np.asarray(self._networks[name].predict_on_batch(flat[start:start
                           + _INFERENCE_BATCH])).reshape(-1)
                for start in range(0, len(flat), _INFERENCE_BATCH)])
            forecasts[rows, window:] = outputs.reshape(len(rows), -1)
        return forecasts

    def _normalise(self, batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised values and each series' (mean, std): fit-window statistics, or for a
        series the shared network has not seen, those of the points given (all in the past)."""
        values = np.where(np.isfinite(batch.values), batch.values, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled below
            means = np.nan_to_num(np.nanmean(values, axis=1), nan=0.0)
            stds = np.maximum(np.nan_to_num(np.nanstd(values, axis=1), nan=1.0), _MIN_STD)
        for row, key in enumerate(batch.keys):
            state = self._series.get(_key_name(key))
            if state is not None:
                means[row], stds[row] = state.mean, state.std
        return (values - means[:, None]) / stds[:, None], means, stds

    def _smoothed_errors(self, batch: SeriesBatch) -> np.ndarray:
        normalised, _, _ = self._normalise(batch)
        forecasts = self._forecast_normalised(batch.keys, normalised)
        return _ewma(np.abs(normalised - forecasts), self.params.error_smoothing)

    def predict(self, batch: SeriesBatch, n_targets: int) -> Forecast:
        normalised, means, stds = self._normalise(batch)
        forecasts = self._forecast_normalised(batch.keys, normalised)
        smoothed = _ewma(np.abs(normalised - forecasts), self.params.error_smoothing)
        first_target = normalised.shape[1] - n_targets
        alpha = 2.0 / (self.params.error_smoothing + 1.0)
        history = smoothed[:, max(0, first_target - self.params.error_history):first_target]
        epsilons = np.array([getattr(self._series.get(_key_name(key)), "epsilon",
                                     self.params.min_band) for key in batch.keys])
        # Only series with enough recent errors get a fresh threshold; the others keep the one
        # from their fit, so the threshold search is not spent on rows that would discard it.
        enough_history = np.isfinite(history).sum(axis=1) >= self.params.error_history // 2
        if history.shape[1] and enough_history.any():
            epsilons[enough_history] = telemanom_thresholds(history[enough_history],
                                                            self.params.min_band)
        # smoothed_j = alpha * |e_j| + (1 - alpha) * smoothed_{j-1} > eps  <=>  |e_j| > half
        previous = np.nan_to_num(smoothed[:, first_target - 1:-1], nan=0.0) if first_target \
            else np.hstack([np.zeros((len(batch.keys), 1)),
                            np.nan_to_num(smoothed[:, :-1], nan=0.0)])
        half_width = np.maximum((epsilons[:, None] - (1 - alpha) * previous) / alpha, 0.0)
        yhat = forecasts[:, first_target:] * stds[:, None] + means[:, None]
        half_width = half_width * stds[:, None]
        return Forecast(yhat=yhat, yhat_lower=yhat - half_width, yhat_upper=yhat + half_width)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        names = sorted(self._networks)
        for index, name in enumerate(names):
            self._networks[name].save(directory / f"network_{index}.keras")
        state = {"networks": names,
                 "series": {name: vars(state) for name, state in self._series.items()}}
        (directory / _STATE_FILE).write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path, params: ModelParams) -> LstmModel:
        keras = _keras()
        state = json.loads((directory / _STATE_FILE).read_text())
        model = cls(params)
        for index, name in enumerate(state["networks"]):
            model._networks[name] = keras.models.load_model(directory / f"network_{index}.keras")
        model._series = {name: _SeriesState(**values) for name, values in state["series"].items()}
        return model


MODEL_CLASS = LstmModel
