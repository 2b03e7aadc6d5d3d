"""The NAB rules of SCORING.md against hand-computed small cases.

A(y) = 2 / (1 + e^(5y)) - 1; the expected numbers below were worked out from it by hand
(A(-1) = 0.9866143, A(-0.1) = 0.2449187, A(1/9) = -0.2708471, A(-0.9) = 0.9780261).
"""

import numpy as np
import pytest

from anomaly_sidecar import nab_score

STANDARD = nab_score.PROFILES["standard"]
LOW_FP = nab_score.PROFILES["reward_low_FP_rate"]
LOW_FN = nab_score.PROFILES["reward_low_FN_rate"]

# A 100-row file: rows 0-14 are probationary (15%), one window on rows 40..49 (W = 10).
N_ROWS = 100
WINDOW = (40, 49)


def detections(*rows: int, n_rows: int = N_ROWS) -> np.ndarray:
    scores = np.zeros(n_rows)
    scores[list(rows)] = 1.0
    return scores


def small_file_score(*rows: int, profile: nab_score.Profile = STANDARD) -> float:
    truth = nab_score.file_truth(N_ROWS, [WINDOW], profile)
    return nab_score.score_at_threshold(truth, detections(*rows), 0.5, profile)


@pytest.mark.parametrize(("n_rows", "expected"), [(100, 15), (4999, 749), (5000, 750),
                                                   (15902, 750), (19, 2)])
def test_probation_is_15_percent_capped_at_750(n_rows, expected):
    assert nab_score.probation_rows(n_rows) == expected


def test_scaled_sigmoid_values():
    assert nab_score.scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert nab_score.scaled_sigmoid(-1.0) == pytest.approx(0.9866143, abs=1e-7)
    assert nab_score.scaled_sigmoid(3.0) == pytest.approx(-0.9999994, abs=1e-7)
    assert nab_score.scaled_sigmoid(3.0001) == -1.0


def test_detection_at_left_edge_is_worth_exactly_tp_weight():
    assert small_file_score(40) == pytest.approx(1.0)


def test_detection_at_right_edge_uses_minus_one_over_w():
    # y = -(49 - 49 + 1) / 10 = -0.1 -> A = 0.2449187, divided by A(-1) = 0.9866143
    assert small_file_score(49) == pytest.approx(0.2482415, abs=1e-6)


def test_only_the_best_detection_in_a_window_counts():
    # rows 41 and 45: row 41 has y = -0.9 -> 0.9780261 / 0.9866143 = 0.9912953
    assert small_file_score(41, 45) == pytest.approx(0.9912953, abs=1e-6)


def test_missed_window_costs_fn_weight():
    assert small_file_score() == pytest.approx(-1.0)
    assert small_file_score(profile=LOW_FN) == pytest.approx(-2.0)


def test_false_positive_before_first_window_costs_full_fp_weight():
    assert small_file_score(20, 40) == pytest.approx(1.0 - 0.11)
    assert small_file_score(20, 40, profile=LOW_FP) == pytest.approx(1.0 - 0.22)


def test_false_positive_after_a_window_is_discounted_with_w_minus_one():
    # row 50: y = (50 - 49) / (10 - 1) = 1/9 -> 0.11 * A(1/9) = -0.0297932
    assert small_file_score(40, 50) == pytest.approx(1.0 - 0.0297932, abs=1e-6)
    # row 80: y = 31/9 > 3 -> full cost
    assert small_file_score(40, 80) == pytest.approx(1.0 - 0.11)


def test_detections_in_probation_cost_nothing():
    assert small_file_score(0, 5, 14) == pytest.approx(-1.0)
    assert small_file_score(15) == pytest.approx(-1.0 - 0.11)


def test_windows_map_to_first_occurrence_of_duplicated_timestamps():
    timestamps = ["2014-03-09 01:00:00", "2014-03-09 03:00:00", "2014-03-09 03:00:00",
                  "2014-03-09 04:00:00", "2014-03-09 05:00:00"]
    windows = [["2014-03-09 03:00:00.000000", "2014-03-09 05:00:00.000000"]]
    assert nab_score.window_rows(timestamps, windows) == [(1, 4)]


def test_window_bound_missing_from_file_is_an_error():
    with pytest.raises(ValueError, match="2020-01-01"):
        nab_score.window_rows(["2019-01-01 00:00:00"], [["2020-01-01", "2020-01-02"]])


def synthetic_corpus(profile):
    """Three files of different lengths (one longer than 5000 rows, one without windows)."""
    layout = [(400, [(100, 139), (300, 339)]), (6000, [(2000, 2599)]), (300, [])]
    return layout, [nab_score.file_truth(n, windows, profile) for n, windows in layout]


@pytest.mark.parametrize("profile", [STANDARD, LOW_FP, LOW_FN])
def test_null_detector_scores_0_and_perfect_detector_100(profile):
    layout, truths = synthetic_corpus(profile)
    null = [np.full(n, 0.5) for n, _ in layout]
    perfect = [detections(*(left for left, _ in windows), n_rows=n) for n, windows in layout]
    assert nab_score.normalise(nab_score.sweep(truths, null, profile).score, truths,
                               profile) == pytest.approx(0.0)
    assert nab_score.normalise(nab_score.sweep(truths, perfect, profile).score, truths,
                               profile) == pytest.approx(100.0)


def test_sweep_picks_the_corpus_wide_best_threshold():
    _, truths = synthetic_corpus(STANDARD)
    scores = [np.zeros(400), np.zeros(6000), np.zeros(300)]
    scores[0][100] = 0.9    # TP at a left edge: the window goes from -1 to +1
    scores[2][200] = 0.8    # FP in a file without windows: -0.11
    scores[1][1000] = 0.75  # FP before the window (row 1000 is past the 750-row probation)
    scores[1][2000] = 0.7   # TP at a left edge
    best = nab_score.sweep(truths, scores, STANDARD)
    # At 0.7 all four are in: -3 + 2 + 2 - 0.22 = 0.78, better than 0.9 alone (-1)
    assert best.threshold == pytest.approx(0.7)
    assert best.score == pytest.approx(1.0 + 1.0 - 1.0 - 0.22)


def test_sweep_ties_keep_the_higher_threshold():
    _, truths = synthetic_corpus(STANDARD)
    scores = [np.zeros(400), np.zeros(6000), np.zeros(300)]
    scores[0][100] = 0.9
    scores[0][105] = 0.6   # same window, later: adds nothing -> tie with 0.9
    best = nab_score.sweep(truths, scores, STANDARD)
    assert best.threshold == pytest.approx(0.9)


def test_sweep_equals_score_at_the_threshold_it_picks():
    rng = np.random.default_rng(3)
    layout, truths = synthetic_corpus(STANDARD)
    scores = [rng.random(n) ** 8 for n, _ in layout]
    best = nab_score.sweep(truths, scores, STANDARD)
    at_best = sum(nab_score.score_at_threshold(truth, values, best.threshold, STANDARD)
                  for truth, values in zip(truths, scores, strict=True))
    assert best.score == pytest.approx(at_best)


def test_nab_value_maps_shipped_threshold_to_one_half():
    values = nab_score.nab_value(np.array([0.0, 0.5, 1.0, 3.0, np.inf, np.nan]))
    assert values.tolist() == pytest.approx([0.0, 1 / 3, 0.5, 0.75, 1.0, 0.0])
    assert np.all(np.diff(nab_score.nab_value(np.linspace(0, 50, 200))) > 0)
