"""Daily close histories from CSV files (``Date,Close,...``), aligned on common dates.

A history folder may hold any assets; each is named by its file: ``BTC-USD_1d.csv`` -> ``BTC``.
The project ships the real closes of nine assets (``aggregator/data/prices``), the default.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from pathlib import Path

import numpy as np

from aggregator.errors import InputError

DEFAULT_HISTORY_DIR = Path(str(files("aggregator") / "data" / "prices"))


def asset_name(path: Path) -> str:
    """``BTC-USD_1d.csv`` -> ``BTC``; ``XRP.csv`` -> ``XRP``."""
    stem = path.stem
    for suffix in ("_1d", "_daily"):
        stem = stem.removesuffix(suffix)
    return stem.split("-")[0].upper()


def history_files(directory: Path) -> dict[str, Path]:
    """Asset name -> CSV file in ``directory``."""
    if not directory.is_dir():
        raise InputError("history", f"{directory} is not a directory")
    out: dict[str, Path] = {}
    for path in sorted(directory.glob("*.csv")):
        name = asset_name(path)
        if name in out:
            raise InputError(
                "history", f"two files for asset {name}: {out[name].name}, {path.name}"
            )
        out[name] = path
    if not out:
        raise InputError("history", f"no *.csv files in {directory}")
    return out


def read_closes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(dates as datetime64[D], closes) of one file, in increasing date order."""
    where = f"history {path.name}"
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"Date", "Close"} <= set(reader.fieldnames):
                raise InputError(where, "needs the columns Date and Close")
            dates: list[date] = []
            closes: list[float] = []
            for row in reader:
                line = reader.line_num  # the file's line, blank lines included
                try:
                    d = date.fromisoformat(row["Date"].strip())
                    p = float(row["Close"])
                except (ValueError, AttributeError, TypeError):  # TypeError: a short row
                    raise InputError(f"{where} line {line}", "bad Date or Close") from None
                if not (math.isfinite(p) and p > 0):
                    raise InputError(f"{where} line {line}", f"Close must be > 0, got {p}")
                if dates and d <= dates[-1]:
                    raise InputError(f"{where} line {line}", "dates must increase")
                dates.append(d)
                closes.append(p)
    except OSError as exc:
        raise InputError(where, f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not dates:
        raise InputError(where, "has no rows")
    return np.array(dates, dtype="datetime64[D]"), np.array(closes, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class PriceHistory:
    """Closes of n assets on T common dates: ``closes[t, i]`` is asset i's close on dates[t]."""

    assets: tuple[str, ...]
    dates: np.ndarray
    closes: np.ndarray

    def last_close(self, asset: str) -> float:
        return float(self.closes[-1, self.assets.index(asset)])

    def between(self, start: np.datetime64 | None, end: np.datetime64 | None) -> PriceHistory:
        keep = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            keep &= self.dates >= start
        if end is not None:
            keep &= self.dates <= end
        return PriceHistory(self.assets, self.dates[keep], self.closes[keep])


def available_assets(directory: Path | None = None) -> tuple[str, ...]:
    return tuple(history_files(directory or DEFAULT_HISTORY_DIR))


def load_history(
    assets: list[str] | tuple[str, ...], directory: Path | None = None
) -> PriceHistory:
    """Closes of ``assets`` from ``directory`` (default: the shipped data), on common dates."""
    directory = directory or DEFAULT_HISTORY_DIR
    found = history_files(directory)
    missing = [a for a in assets if a not in found]
    if missing:
        raise InputError(
            "history",
            f"no price file for {', '.join(missing)} in {directory} (has {', '.join(found)})",
        )
    series = [read_closes(found[a]) for a in assets]
    common = series[0][0]
    for d, _ in series[1:]:
        common = np.intersect1d(common, d, assume_unique=True)
    if common.size < 2:
        raise InputError("history", f"{', '.join(assets)} share fewer than 2 dates")
    closes = np.column_stack([p[np.isin(d, common, assume_unique=True)] for d, p in series])
    return PriceHistory(tuple(assets), common, closes)
