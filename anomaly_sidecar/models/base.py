"""The one interface every forecaster implements, so a new model type plugs in as one new file.

A model type `NAME` lives in `anomaly_sidecar/models/NAME.py` and exposes `MODEL_CLASS`; the
loader imports that module only when a config asks for it, so TensorFlow is imported only by
configs that use `type: lstm`.

A model has two parts. What it learns (`fit`: ARIMA coefficients, network weights) is shared
state, refitted on a schedule off the serving path. What it must remember about each series to
forecast the next point (the last values of a rolling window, an ARIMA filter's residuals, a
level) is streaming state: one row per series in a dict of numpy arrays, advanced with the new
points only (`advance`), saved between runs, and never rebuilt from history once a series is
known. The daemon, the backtest and the benchmarks all go through `advance` (see
anomaly_sidecar/detector.py, which adds the calibration layer every model shares), which is
what makes the published accuracy the production accuracy.

Every window-like parameter is a `Duration` ("30m", "1d"): Prometheus users query the same
series at 15 s or 5 min steps, and a default must mean the same at each
(durations.span_points turns it into points for a given step).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anomaly_sidecar.durations import parse_window

SeriesKey = tuple[tuple[str, str], ...]
"""A series' identity: its labels (without __name__) as sorted (name, value) pairs."""

StreamState = dict[str, np.ndarray]
"""Per-series streaming state: every array's first axis is the series (row i = series i)."""


class Duration(float):
    """A length of time in seconds, written in YAML as "15s", "30m", "1h30m" or "7d" (a bare
    number is refused: it would be unclear whether it counts points or seconds). "0" is
    allowed where a parameter says 0 turns something off."""


class ModelParamError(ValueError):
    """A model parameter is wrong; `key` is its name inside the model's section."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class SeriesBatch:
    """Series aligned on one step grid; values[i, j] is series i at timestamps[j] (NaN = gap)."""

    keys: Sequence[SeriesKey]
    timestamps: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape != (len(self.keys), len(self.timestamps)):
            raise ValueError(
                f"values shape {self.values.shape} does not match "
                f"{len(self.keys)} keys x {len(self.timestamps)} timestamps"
            )

    def tail(self, n_points: int) -> SeriesBatch:
        """The last n_points columns."""
        start = max(0, len(self.timestamps) - n_points)
        return SeriesBatch(self.keys, self.timestamps[start:], self.values[:, start:])


@dataclass(frozen=True)
class Residuals:
    """What a model says about new columns; every array is (n_series, n_columns).

    The detector turns these into scores: the deviation |y - yhat| / unit and each of
    `extra_errors` go through the calibration layer, and the band it publishes is
    yhat +- z * unit, z being the calibrated threshold of the deviation."""

    yhat: np.ndarray
    """One-step-ahead forecast of each column from the columns before it; NaN = none."""
    unit: np.ndarray
    """The scale of the deviation: a z-score model divides by its standard deviation."""
    raw_half_width: np.ndarray
    """The model's own, uncalibrated band (e.g. 3 standard deviations), for `calibration: raw`."""
    extra_errors: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Further raw error channels (>= 0, NaN = none) a model scores besides the deviation."""
    must_alarm: np.ndarray | None = None
    """Points that alarm whatever their calibrated score (a value beyond everything seen)."""


@dataclass(frozen=True)
class ModelParams:
    """Base of each model's parameter dataclass. Fields are the YAML keys of the model section.

    Field defaults are the shipped defaults; `validate()` checks values after type checks.
    """

    def validate(self) -> None:
        """Raise ModelParamError for a value that has the right type but is unusable."""


class Model(ABC):
    """A forecaster over series sampled every `step_seconds`. Subclasses set `type_name` and
    `Params`, and implement the streaming part; models that learn override the fit part."""

    type_name: ClassVar[str]
    Params: ClassVar[type[ModelParams]]
    has_raw_band: ClassVar[bool] = True
    """Whether the model has a band of its own (`calibration: raw`): the composite's several
    channels have none."""
    learns: ClassVar[bool] = False
    """Whether `fit` learns anything (ARIMA, LSTM): only such models are refitted on a
    schedule; the others forecast from their streaming state alone."""

    def __init__(self, params: ModelParams, step_seconds: float) -> None:
        self.params = params
        self.step_seconds = step_seconds

    # -- what it learns ---------------------------------------------------------------------

    @property
    def fit_seconds(self) -> float | None:
        """How much of the newest history `fit` looks at (None: the whole fit_window), so the
        daemon reads no more than that."""
        return None

    def fit(self, batch: SeriesBatch) -> None:  # noqa: B027 -- models that learn override it
        """Learn from the history in batch (the fit_window). May be slow; runs off the serving
        path. Must tolerate NaN gaps, constant series and series shorter than needed."""

    def can_forecast(self, key: SeriesKey) -> bool:
        """Whether `key` can be forecast now (a per-series model must have fitted it)."""
        return True

    def save(self, directory: Path) -> None:  # noqa: B027 -- only models that learn save
        """Write what fit learned into directory (which exists and is empty)."""

    def load(self, directory: Path) -> None:  # noqa: B027
        """Restore what save wrote; raise any exception for a corrupt or incompatible state."""

    # -- what it remembers per series -------------------------------------------------------

    @property
    def extra_channels(self) -> tuple[str, ...]:
        """Names of the error channels `advance` returns besides the deviation."""
        return ()

    @property
    @abstractmethod
    def history_seconds(self) -> float:
        """How much history a new series' streaming state needs before its forecasts mean
        what they should (what the first read of a new series covers)."""

    @abstractmethod
    def new_state(self, n_series: int) -> StreamState:
        """Streaming state for n_series series not seen before."""

    @abstractmethod
    def advance(self, state: StreamState, keys: Sequence[SeriesKey], timestamps: np.ndarray,
                values: np.ndarray) -> Residuals:
        """Forecast each of the new columns (values is (len(keys), len(timestamps)), NaN = no
        sample) from the state and the columns before it, and update the state with them.

        Must be causal (column j uses only what came before it), must give the same results
        however the columns are split into calls, must not raise on NaN/Inf input (they are
        gaps), and must leave the state of a series untouched by its NaN columns except for
        what time alone changes."""


def model_types() -> list[str]:
    """Every model type a config may name: the modules of this package other than base and
    the helpers (which start with an underscore), found on disk so a new model file is picked
    up by the contract tests without being listed anywhere; each must define MODEL_CLASS,
    which model_class imports (the contract tests build every type through it)."""
    package = Path(__file__).parent
    return sorted(path.stem for path in package.glob("*.py")
                  if not path.stem.startswith("_") and path.stem != "base")


def model_class(type_name: str) -> type[Model]:
    """Import anomaly_sidecar.models.<type_name> and return its MODEL_CLASS."""
    if type_name not in model_types():
        raise ModelParamError("type", f"unknown model type {type_name!r} "
                                      f"(known: {', '.join(model_types())})")
    return importlib.import_module(f"anomaly_sidecar.models.{type_name}").MODEL_CLASS


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce/check one YAML value against a dataclass field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(key, value, option)
            except ModelParamError as error:
                errors.append(error.reason)
        raise ModelParamError(key, " or ".join(errors))
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            choices = ", ".join(map(str, allowed))
            raise ModelParamError(key, f"must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ModelParamError(key, f"must be a list, got {type(value).__name__}")
        item_types = typing.get_args(annotation)
        if origin is tuple and item_types and item_types[-1] is not Ellipsis:
            if len(value) != len(item_types):
                raise ModelParamError(key, f"must have {len(item_types)} items, got {len(value)}")
            return tuple(_check_type(f"{key}[{i}]", v, t)
                         for i, (v, t) in enumerate(zip(value, item_types, strict=True)))
        item_type = item_types[0] if item_types else Any
        items = [_check_type(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is Duration:
        return _duration(key, value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ModelParamError(key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelParamError(key, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelParamError(key, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ModelParamError(key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter annotation {annotation!r} for {key}")


def _duration(key: str, value: Any) -> Duration:
    try:
        return Duration(parse_window(value))
    except ValueError as error:
        raise ModelParamError(key, str(error)) from None


def build_params(params_class: type[ModelParams], raw: Mapping[str, Any]) -> ModelParams:
    """Turn a model's YAML parameters into its Params dataclass: unknown keys and wrong types
    are ModelParamError naming the key."""
    hints = typing.get_type_hints(params_class)
    fields = {field.name for field in dataclasses.fields(params_class)}
    for key in raw:
        if key not in fields:
            raise ModelParamError(str(key), f"unknown key (allowed: {', '.join(sorted(fields))})")
    values = {key: _check_type(key, value, hints[key]) for key, value in raw.items()}
    params = params_class(**values)
    params.validate()
    return params
