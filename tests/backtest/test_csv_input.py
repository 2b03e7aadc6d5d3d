"""read_csv and `anomaly-sidecar backtest` against hostile or broken CSV input: each problem is a
BacktestInputError naming the file, row and reason (exit 1 from the CLI, as click's
ClickException has it; exit 2 for unusable --out/--plot paths, checked before the run), never a
traceback; while every file of NAB and AIOps 2018 still reads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from anomaly_sidecar.backtest import BacktestInputError, read_csv
from anomaly_sidecar.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD_ROWS = "".join(f"{1_600_000_000 + 60 * i},{i % 7}\n" for i in range(200))


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "in.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
                 "(file): contains a NUL byte", id="binary"),
    pytest.param(("timestamp,value\n" + GOOD_ROWS).encode("utf-16"), "(file): is UTF-16 text",
                 id="utf-16"),
    pytest.param("timestamp,value\n1600000000," + "x" * (128 * 1024 + 1) + "\n",
                 "row 2: field larger than field limit", id="128KiB-cell"),
    pytest.param("timestamp,value\n" + "".join(f"{1600000000 + i * 1e-6},{i}\n"
                                               for i in range(10)),
                 "s after the row before; steps under 0.001s", id="tiny-step"),
    pytest.param("timestamp,value\n1600000000,1\n1600007300,2\n1600003600,3\n",
                 "row 4: timestamp 1600003600 is earlier than the row before", id="unsorted"),
    pytest.param("timestamp,value\n" + "".join(f"{1600000000 - 60 * i},{i}\n"
                                               for i in range(10)),
                 "row 4: timestamp 1599999880 is earlier than the row before", id="reversed"),
    pytest.param("timestamp,value\n1600000000,1\nnan,2\n",
                 "row 3: timestamp 'nan' is not epoch seconds", id="nan-timestamp"),
    pytest.param("timestamp,value\n1600000000,1\ninf,2\n",
                 "row 3: timestamp 'inf' is not epoch seconds", id="inf-timestamp"),
    pytest.param("timestamp,value\n1600000000,1\n1e300,2\n",
                 "row 3: timestamp '1e300' is not epoch seconds", id="absurd-timestamp"),
    pytest.param("value,timestamp\n" + "".join(f"{i},{1600000000 + 60 * i}\n" for i in range(5)),
                 "row 1: the header names the time column second", id="value-timestamp-header"),
    pytest.param("timestamp,value\n" + "".join(f"{1600000000 + 60 * i},n/a\n" for i in range(5)),
                 "no value in the second column is a number", id="all-non-numeric"),
])
def test_bad_csv_is_a_clear_error(tmp_path, content, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(BacktestInputError) as raised:
        read_csv(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert len(str(raised.value)) < 600
    result = CliRunner().invoke(main, ["backtest", "--csv", str(path), "--out",
                                       str(tmp_path / "out.csv")])
    assert (result.exit_code == 1 and result.exception is None) or isinstance(
        result.exception, SystemExit), result.output
    assert result.exit_code == 1 and f"Error: {path}: " in result.output
    assert not (tmp_path / "out.csv").exists()


def test_repeated_timestamps_and_one_daylight_saving_step_back_are_kept(tmp_path, caplog):
    rows = [(1600000000 + 300 * i, i) for i in range(30)]
    rows.insert(10, rows[9])  # the same timestamp twice (7 NAB files have such rows)
    rows += [(rows[-1][0] - 3300 + 300 * i, i) for i in range(5)]  # 55 min back, once
    path = write(tmp_path, "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    caplog.set_level(logging.WARNING)
    series = read_csv(path)
    assert len(series.values) == len(rows)
    assert "1 row(s) repeat the timestamp of the row before (first: row 12)" in caplog.text
    assert "the clock steps back (a daylight-saving change) at row(s) 33" in caplog.text
    again = [*rows, (rows[-1][0] - 600, 0)]  # a second step back within a day: unsorted data
    path = write(tmp_path, "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in again))
    with pytest.raises(BacktestInputError, match=r"row 38: .* is earlier than the row before"):
        read_csv(path)


@pytest.mark.parametrize(("option", "target", "message"), [
    ("--out", "missing/out.csv", "folder .*missing does not exist"),
    ("--out", ".", "is a directory"),
    ("--plot", "missing/plot.png", "folder .*missing does not exist"),
    ("--plot", "plot.txt", "the plot is a PNG"),
])
def test_unusable_output_paths_exit_2_before_the_run(tmp_path, option, target, message) -> None:
    import re

    path = write(tmp_path, "timestamp,value\n" + GOOD_ROWS)
    arguments = ["backtest", "--csv", str(path), "--out", str(tmp_path / "out.csv")]
    arguments += [option, str(tmp_path / target)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert option in result.output and re.search(message, result.output), result.output
    assert not (tmp_path / "out.csv").exists()


def dataset_root() -> Path | None:
    """shared/datasets beside the checkout (CI has a copy there), or the machine's copy."""
    for candidate in (REPO_ROOT.parent / "shared" / "datasets",
                      REPO_ROOT.parents[1] / "shared" / "datasets"):
        if (candidate / "nab" / "data").is_dir():
            return candidate
    return None


def test_every_nab_and_aiops_file_still_reads() -> None:
    root = dataset_root()
    if root is None:
        pytest.skip("shared/datasets (NAB, AIOps 2018) is not beside this checkout")
    nab = sorted((root / "nab" / "data").rglob("*.csv"))
    aiops = sorted(path for path in (root / "aiops2018").glob("*.csv")
                   if path.name != "manifest.csv")
    assert (len(nab), len(aiops)) == (58, 29)
    for path in nab + aiops:
        assert len(read_csv(path).values) > 1000, path
