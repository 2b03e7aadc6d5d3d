"""The one interface every forecaster implements, so a new model type plugs in as one new file.

A model type `NAME` lives in `anomaly_sidecar/models/NAME.py` and exposes `MODEL_CLASS`; the
loader imports that module only when a config asks for it, so TensorFlow is imported only by
configs that use `type: lstm`.

Data always flows as a `SeriesBatch`: many series on one shared step grid, NaN where a series
has no sample. Forecasts are one-step-ahead: for each target column the model may use only the
columns before it. The daemon's inference, the backtest and the NAB benchmark all call the
same `predict`, which is what makes the published accuracy the production accuracy.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SeriesKey = tuple[tuple[str, str], ...]
"""A series' identity: its labels (without __name__) as sorted (name, value) pairs."""


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
class Forecast:
    """One-step-ahead expectations for the target columns, each of shape (n_series, n_targets).

    NaN in yhat means "no forecast" (not enough history, or a series the model cannot predict
    yet); such points are never scored.
    """

    yhat: np.ndarray
    yhat_lower: np.ndarray
    yhat_upper: np.ndarray
    score_hint: np.ndarray | None = None
    """Optional model-computed anomaly score for the same points; None -> scoring.py derives it
    from the band. Lets a model whose band is not symmetric-in-meaning (e.g. likelihood based)
    still keep the output contract."""


@dataclass(frozen=True)
class ModelParams:
    """Base of each model's parameter dataclass. Fields are the YAML keys of the model section.

    Field defaults are the shipped defaults; `validate()` checks values after type checks.
    """

    def validate(self) -> None:
        """Raise ModelParamError for a value that has the right type but is unusable."""


class Model(ABC):
    """A forecaster over a SeriesBatch. Subclasses set `type_name` and `Params`."""

    type_name: ClassVar[str]
    Params: ClassVar[type[ModelParams]]
    score_kind: ClassVar[str] = "band"
    """How anomaly_score behaves while something is wrong, which decides the alert rule that
    fits it: "band" scores stay > 1 for as long as the value is outside the band (so an alert
    can wait `for` a few minutes); "alarm" scores mark single points, each followed by a quiet
    period (so an alert must look back over a window instead). Published on
    anomaly_sidecar_model_info."""

    def __init__(self, params: ModelParams) -> None:
        self.params = params

    @property
    @abstractmethod
    def context_points(self) -> int:
        """How many points before the first target `predict` wants to see (warm-up included)."""

    @property
    def fit_points(self) -> int | None:
        """How many of the newest points `fit` looks at (None: the whole fit_window), so the
        daemon reads no more history than that: 10,000 series x 1d at 15s would otherwise be
        57.6M points per fit."""
        return None

    @abstractmethod
    def fit(self, batch: SeriesBatch) -> None:
        """Learn from the history in batch (the fit_window). May be slow; runs off the serving
        path. Must tolerate NaN gaps, constant series and series shorter than needed."""

    @abstractmethod
    def predict(self, batch: SeriesBatch, n_targets: int) -> Forecast:
        """One-step-ahead forecasts for the last n_targets columns of batch.

        The forecast for column j may use only columns < j. Must not raise on NaN/Inf input;
        returns NaN where it cannot forecast."""

    def can_predict(self, key: SeriesKey) -> bool:
        """Whether `key` has been fitted (shared models answer True for any key once fitted)."""
        return True

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the fitted state into directory (which exists and is empty)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, params: ModelParams) -> Model:
        """Restore what save wrote; raise any exception for a corrupt or incompatible state."""


def model_class(type_name: str) -> type[Model]:
    """Import anomaly_sidecar.models.<type_name> and return its MODEL_CLASS."""
    if not type_name.isidentifier() or type_name == "base":
        raise ModelParamError("type", f"unknown model type {type_name!r}")
    try:
        module = importlib.import_module(f"anomaly_sidecar.models.{type_name}")
    except ModuleNotFoundError as error:
        if error.name == f"anomaly_sidecar.models.{type_name}":
            raise ModelParamError("type", f"unknown model type {type_name!r}") from None
        raise
    return module.MODEL_CLASS


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
