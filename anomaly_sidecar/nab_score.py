"""The Numenta Anomaly Benchmark score, implemented from the corpus' SCORING.md.

Kept inside the package (not in benchmarks/) so the rules have unit tests of their own: a
published accuracy figure is only as good as the scorer that produced it.

Everything works on row positions (NAB matches results to data by position, not timestamp).
A file's ground truth becomes one weight per row (`FileTruth.row_value`, section 4 of
SCORING.md) and the id of the window the row lies in (-1 outside), so scoring a threshold or
sweeping all thresholds is plain arithmetic over those arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 750  # 0.15 * 5000: NAB caps the free warm-up at 750 rows
NO_DETECTION_THRESHOLD = 1.1  # NAB's first sweep candidate: above every score in [0, 1]


@dataclass(frozen=True)
class Profile:
    """One application profile's weights (tnWeight exists in NAB's file but is never used)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def probation_rows(n_rows: int) -> int:
    """Rows at the start of a file that are never scored: 15% of it, at most 750."""
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_CAP_ROWS))


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's A(y): 2*sigmoid(-5y) - 1, and exactly -1 once y > 3."""
    y = np.asarray(y, dtype=float)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0)


def strip_nab_timestamp(timestamp: str) -> str:
    """Window bounds in the labels carry a '.000000' suffix the data files do not have."""
    return timestamp.split(".")[0].strip()


def window_rows(timestamps: Sequence[str], windows: Sequence[Sequence[str]]
                ) -> list[tuple[int, int]]:
    """Map [start_ts, end_ts] windows to inclusive row ranges, using the FIRST row carrying
    each timestamp (files with duplicated timestamps score this way in NAB)."""
    first_row: dict[str, int] = {}
    for row, timestamp in enumerate(timestamps):
        first_row.setdefault(strip_nab_timestamp(timestamp), row)
    ranges = []
    for start, end in windows:
        try:
            ranges.append((first_row[strip_nab_timestamp(start)],
                           first_row[strip_nab_timestamp(end)]))
        except KeyError as error:
            raise ValueError(f"window bound {error.args[0]} is not a timestamp of the file") \
                from None
    return ranges


@dataclass(frozen=True)
class FileTruth:
    """Ground truth of one file in the form scoring needs, for one profile.

    Only non-probationary rows are kept: `row_value[k]` is s_i of section 4 for the k-th of
    them and `row_window[k]` the index of its window (-1 outside every window).
    """

    n_rows: int
    probation: int
    n_windows: int
    row_value: np.ndarray
    row_window: np.ndarray


def file_truth(n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile) -> FileTruth:
    """Per-row weights of one file (sections 2-4 of SCORING.md)."""
    probation = probation_rows(n_rows)
    a_at_left_edge = float(scaled_sigmoid(-1.0))
    value = np.full(n_rows, -profile.fp_weight)  # before the first window: full FP cost
    window_of_row = np.full(n_rows, -1, dtype=int)
    counted = [(left, right) for left, right in sorted(windows) if right >= probation]
    for index, (left, right) in enumerate(counted):
        width = right - left + 1
        rows = np.arange(left, right + 1)
        value[rows] = profile.tp_weight * scaled_sigmoid(-(right - rows + 1) / width) \
            / a_at_left_edge
        window_of_row[rows] = index
        next_left = counted[index + 1][0] if index + 1 < len(counted) else n_rows
        after = np.arange(right + 1, next_left)
        # SCORING.md: W' - 1 (guarded for a one-row window, which the corpus does not have)
        value[after] = profile.fp_weight * scaled_sigmoid((after - right) / max(width - 1, 1))
    return FileTruth(n_rows, probation, len(counted), value[probation:],
                     window_of_row[probation:])


def score_at_threshold(truth: FileTruth, scores: np.ndarray, threshold: float,
                       profile: Profile) -> float:
    """S_f(theta) of section 5: best hit per window (or -fn_weight), plus every FP."""
    if len(scores) != truth.n_rows:
        raise ValueError(f"{len(scores)} scores for a file of {truth.n_rows} rows")
    detected = np.asarray(scores, dtype=float)[truth.probation:] >= threshold
    outside = truth.row_window < 0
    total = float(truth.row_value[detected & outside].sum())
    for window in range(truth.n_windows):
        hits = truth.row_value[detected & (truth.row_window == window)]
        total += float(hits.max()) if hits.size else -profile.fn_weight
    return total


@dataclass(frozen=True)
class SweepResult:
    """The corpus-wide best threshold and the raw score it gives."""

    threshold: float
    score: float


def sweep(truths: Sequence[FileTruth], scores: Sequence[np.ndarray],
          profile: Profile) -> SweepResult:
    """Section 6: one corpus-wide threshold maximising the summed score; ties keep the higher
    threshold. Incremental over rows sorted by descending score."""
    values, windows, row_scores = [], [], []
    window_offset = 0
    for truth, file_scores in zip(truths, scores, strict=True):
        if len(file_scores) != truth.n_rows:
            raise ValueError(f"{len(file_scores)} scores for a file of {truth.n_rows} rows")
        values.append(truth.row_value)
        windows.append(np.where(truth.row_window >= 0, truth.row_window + window_offset, -1))
        row_scores.append(np.asarray(file_scores, dtype=float)[truth.probation:])
        window_offset += truth.n_windows
    all_values = np.concatenate(values) if values else np.empty(0)
    all_windows = np.concatenate(windows) if windows else np.empty(0, dtype=int)
    all_scores = np.concatenate(row_scores) if row_scores else np.empty(0)
    order = np.argsort(-all_scores, kind="stable")
    window_value = np.full(window_offset, -profile.fn_weight)
    current = float(window_value.sum())
    best = SweepResult(NO_DETECTION_THRESHOLD, current)
    sorted_scores = all_scores[order]
    for position, row in enumerate(order):
        window = all_windows[row]
        if window < 0:
            current += all_values[row]
        elif all_values[row] > window_value[window]:
            current += all_values[row] - window_value[window]
            window_value[window] = all_values[row]
        last_of_group = (position + 1 == len(order)
                         or sorted_scores[position + 1] != sorted_scores[position])
        if last_of_group and current > best.score:
            best = SweepResult(float(sorted_scores[position]), current)
    return best


def null_score(truths: Sequence[FileTruth], profile: Profile) -> float:
    """The null detector's total: every counted window missed."""
    return -profile.fn_weight * sum(truth.n_windows for truth in truths)


def perfect_score(truths: Sequence[FileTruth], profile: Profile) -> float:
    """Every window hit at its left edge, no false positives."""
    return profile.tp_weight * sum(truth.n_windows for truth in truths)


def normalise(raw: float, truths: Sequence[FileTruth], profile: Profile) -> float:
    """Section 7: 100 * (S - S_null) / (S_perfect - S_null)."""
    null = null_score(truths, profile)
    return 100.0 * (raw - null) / (perfect_score(truths, profile) - null)


def nab_value(anomaly_score: np.ndarray) -> np.ndarray:
    """Map the sidecar's anomaly_score s (>= 0, > 1 = outside the band) to NAB's [0, 1]:
    s / (1 + s). Monotone, so sweeping is unaffected; s = 1 maps to exactly 0.5, so NAB's
    threshold 0.5 is the sidecar's shipped alarm threshold. NaN (no score) maps to 0."""
    s = np.asarray(anomaly_score, dtype=float)
    with np.errstate(invalid="ignore"):
        mapped = np.where(np.isposinf(s), 1.0, s / (1.0 + s))
    return np.where(np.isfinite(mapped), np.clip(mapped, 0.0, 1.0), 0.0)
