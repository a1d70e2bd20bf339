"""The daily-close loader of :mod:`aggregator.history`: naming, alignment and file errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from aggregator.errors import InputError
from aggregator.history import (
    DEFAULT_HISTORY_DIR,
    asset_name,
    available_assets,
    history_files,
    load_history,
    read_closes,
)

SHIPPED = ("AVAX", "BNB", "BTC", "ETH", "LINK", "MATIC", "SOL", "USDC", "USDT")


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "Date,Close") -> Path:
    path.write_text(header + "\n" + "".join(f"{d},{c}\n" for d, c in rows))
    return path


def days(first: int, last: int, start: float = 100.0) -> list[tuple[str, str]]:
    """Rows for 2024-01-<first> .. 2024-01-<last>, the close being start + day."""
    return [(f"2024-01-{d:02d}", str(start + d)) for d in range(first, last + 1)]


@pytest.mark.parametrize(
    ("file", "asset"),
    [
        ("BTC-USD_1d.csv", "BTC"),
        ("XRP.csv", "XRP"),
        ("xrp-usd.csv", "XRP"),
        ("ada_daily.csv", "ADA"),
        ("Doge-EUR_1d.csv", "DOGE"),
        ("stETH_1d.csv", "STETH"),
    ],
)
def test_asset_name_from_file_name(file: str, asset: str) -> None:
    assert asset_name(Path("/some/dir") / file) == asset


def test_history_files_names_every_csv(tmp_path: Path) -> None:
    write_csv(tmp_path / "XRP-USD_1d.csv", days(1, 3))
    write_csv(tmp_path / "ada.csv", days(1, 3))
    (tmp_path / "notes.txt").write_text("not a price file")
    found = history_files(tmp_path)
    assert found == {"ADA": tmp_path / "ada.csv", "XRP": tmp_path / "XRP-USD_1d.csv"}
    assert set(available_assets(tmp_path)) == {"ADA", "XRP"}


def test_two_files_for_one_asset_are_rejected(tmp_path: Path) -> None:
    write_csv(tmp_path / "XRP-USD_1d.csv", days(1, 3))
    write_csv(tmp_path / "xrp.csv", days(1, 3))
    with pytest.raises(InputError) as info:
        history_files(tmp_path)
    assert info.value.field == "history"
    assert "XRP" in info.value.reason


def test_missing_and_empty_dirs_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^history: .*not a directory"):
        history_files(tmp_path / "nope")
    with pytest.raises(InputError, match=r"^history: no \*\.csv files"):
        history_files(tmp_path)
    write_csv(tmp_path / "XRP.csv", days(1, 3))
    with pytest.raises(InputError, match=r"^history: .*not a directory"):
        history_files(tmp_path / "XRP.csv")


def test_shipped_history() -> None:
    assert set(available_assets()) == set(SHIPPED)
    h = load_history(["ETH", "BTC"])
    with (DEFAULT_HISTORY_DIR / "ETH-USD_1d.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert h.assets == ("ETH", "BTC")
    assert h.last_close("ETH") == float(rows[-1]["Close"])
    assert h.dates[-1] == np.datetime64(rows[-1]["Date"])
    assert h.closes.shape == (len(h.dates), 2)
    assert np.all(np.diff(h.dates) > np.timedelta64(0, "D"))
    assert np.all(np.isfinite(h.closes)) and np.all(h.closes > 0)


def test_alignment_keeps_only_common_dates(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA-USD_1d.csv", days(1, 6, start=100.0))
    # BBB starts later, ends later and has a gap on the 5th
    rows = [r for r in days(3, 9, start=200.0) if r[0] != "2024-01-05"]
    write_csv(tmp_path / "BBB-USD_1d.csv", rows)
    h = load_history(["BBB", "AAA"], tmp_path)
    assert h.assets == ("BBB", "AAA")
    expected = np.array(["2024-01-03", "2024-01-04", "2024-01-06"], dtype="datetime64[D]")
    np.testing.assert_array_equal(h.dates, expected)
    np.testing.assert_array_equal(h.closes, [[203.0, 103.0], [204.0, 104.0], [206.0, 106.0]])
    assert h.last_close("AAA") == 106.0
    assert h.last_close("BBB") == 206.0
    # one asset alone keeps all its dates
    assert len(load_history(["AAA"], tmp_path).dates) == 6


def test_between_cuts_dates(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", days(1, 6))
    h = load_history(["AAA"], tmp_path).between(
        np.datetime64("2024-01-02"), np.datetime64("2024-01-04")
    )
    np.testing.assert_array_equal(h.closes[:, 0], [102.0, 103.0, 104.0])


def test_too_few_common_dates(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", days(1, 3))
    write_csv(tmp_path / "BBB.csv", days(3, 6))
    with pytest.raises(InputError) as info:
        load_history(["AAA", "BBB"], tmp_path)
    assert info.value.field == "history"
    assert "AAA" in info.value.reason and "BBB" in info.value.reason


def test_unknown_asset_is_named(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", days(1, 3))
    with pytest.raises(InputError) as info:
        load_history(["AAA", "ZZZ"], tmp_path)
    assert info.value.field == "history"
    assert "ZZZ" in info.value.reason


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (("2024-01-03", "0"), "Close must be > 0"),
        (("2024-01-03", "-4.5"), "Close must be > 0"),
        (("2024-01-03", "nan"), "Close must be > 0"),
        (("2024-01-03", "inf"), "Close must be > 0"),
        (("2024-01-03", "abc"), "bad Date or Close"),
        (("2024-01-03", ""), "bad Date or Close"),
        (("2024-13-03", "101"), "bad Date or Close"),
        (("03/01/2024", "101"), "bad Date or Close"),
        (("2024-01-01", "101"), "dates must increase"),  # goes back
        (("2024-01-02", "101"), "dates must increase"),  # repeats
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, bad_row: tuple[str, str], reason: str) -> None:
    rows = [*days(1, 2), bad_row, *days(4, 5)]
    path = write_csv(tmp_path / "XRP-USD_1d.csv", rows)
    # header is line 1, so the third row is line 4
    with pytest.raises(InputError) as info:
        read_closes(path)
    assert info.value.field == "history XRP-USD_1d.csv line 4"
    assert info.value.reason.startswith(reason)
    # load_history reports the same problem
    with pytest.raises(InputError, match=r"^history XRP-USD_1d\.csv line 4: "):
        load_history(["XRP"], tmp_path)


def test_short_row_is_a_bad_close(tmp_path: Path) -> None:
    path = tmp_path / "XRP.csv"
    path.write_text("Date,Close\n2024-01-01,1\n2024-01-02\n")
    with pytest.raises(InputError, match=r"^history XRP\.csv line 3: bad Date or Close"):
        read_closes(path)


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "XRP.csv"
    path.write_text("Date,Close\n2024-01-01,1\n\n2024-01-02,1\n2024-01-03,0\n")
    with pytest.raises(InputError, match=r"^history XRP\.csv line 5: Close must be > 0"):
        read_closes(path)


def test_missing_columns_and_empty_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "XRP.csv", days(1, 3), header="Day,Price")
    with pytest.raises(InputError, match=r"^history XRP\.csv: needs the columns Date and Close"):
        read_closes(path)
    path.write_text("")
    with pytest.raises(InputError, match=r"^history XRP\.csv: needs the columns"):
        read_closes(path)
    path.write_text("Date,Close\n")
    with pytest.raises(InputError, match=r"^history XRP\.csv: has no rows"):
        read_closes(path)


def test_extra_columns_and_spaces_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "XRP.csv"
    path.write_text("Date,Open,Close\n 2024-01-01 ,9,1.5\n2024-01-02,9, 2.5\n")
    dates, closes = read_closes(path)
    np.testing.assert_array_equal(dates, np.array(["2024-01-01", "2024-01-02"], "datetime64[D]"))
    np.testing.assert_array_equal(closes, [1.5, 2.5])
