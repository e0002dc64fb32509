"""Series stores: multivariate time series as ``values[time, variate]`` with a datetime64 ``time`` coordinate.

Layout (DESIGN.md "Series"), one zarr v3 group written by xarray::

    values[time, variate] float64      the raw measurements, columns in file order
    time[time] datetime64[ns]          strictly increasing, no duplicates
    mean[variate], std[variate]        scaler statistics of the *training rows only* (population std, as
                                       scikit-learn's StandardScaler that the benchmark protocol uses)
    attrs: layout="series", variates (names, kept as written; not a string array because zarr v3 has no
           stable string dtype yet), target, freq, protocol, splits {train|val|test: [start, end)} in rows,
           source, sha256, encoding, missing (NaN report and the fill policy that was applied)

Split borders follow the long-horizon benchmark protocol: the ETT files use 12/4/4 months of 30 days from the
start (rows 0:8640:11520:14400 for hourly data, x4 for 15-minute data; the rest of the file is unused);
every other series is split 70/10/20 chronologically (``int(0.7 n)`` training rows, ``int(0.2 n)`` test rows).
Time features are not stored: :func:`time_features` computes them on the fly from ``time``.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.errors import DataError
from sciformer.io import atomic_path

FILL_POLICIES = ("error", "ffill", "interpolate", "drop")
DUPLICATE_POLICIES = ("error", "keep", "first")
PROTOCOLS = ("auto", "ett", "ratio")
ETT_MONTHS = (12, 4, 4)  # train / val / test months of 30 days (Informer's ETT protocol)
RATIOS = (0.7, 0.1, 0.2)


# ---------------------------------------------------------------------------------------------------------
# time features (the benchmark code's `time_features`: each feature scaled to [-0.5, 0.5])
# ---------------------------------------------------------------------------------------------------------
def _second(t):
    return t.second / 59.0 - 0.5


def _minute(t):
    return t.minute / 59.0 - 0.5


def _hour(t):
    return t.hour / 23.0 - 0.5


def _day_of_week(t):
    return t.dayofweek / 6.0 - 0.5


def _day_of_month(t):
    return (t.day - 1) / 30.0 - 0.5


def _day_of_year(t):
    return (t.dayofyear - 1) / 365.0 - 0.5


def _month(t):
    return (t.month - 1) / 11.0 - 0.5


def _week(t):
    return (t.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5


# Feature sets by sampling frequency (finest unit first), as in the benchmark code.
TIME_FEATURES = {
    "s": (_second, _minute, _hour, _day_of_week, _day_of_month, _day_of_year),
    "t": (_minute, _hour, _day_of_week, _day_of_month, _day_of_year),
    "h": (_hour, _day_of_week, _day_of_month, _day_of_year),
    "d": (_day_of_week, _day_of_month, _day_of_year),
    "w": (_day_of_month, _week),
    "m": (_month,),
}


def frequency_code(step_seconds: float) -> str:
    """The feature-set code for a sampling step: seconds 's', minutes 't', hours 'h', days 'd', weeks 'w'."""
    for code, unit in (("m", 28 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("t", 60)):
        if step_seconds >= unit:
            return code
    return "s"


def time_features(time: np.ndarray, freq: str = "h") -> np.ndarray:
    """``[T, F]`` float32 calendar features of datetime64 ``time`` for a frequency code (``TIME_FEATURES``).

    The benchmark scripts use the hourly set ('h', 4 features) for every data set, ETTm and Weather included;
    pass ``freq`` explicitly to get the finer sets.
    """
    import pandas as pd

    if freq not in TIME_FEATURES:
        raise DataError(f"unknown time-feature frequency {freq!r}; use one of {sorted(TIME_FEATURES)}")
    t = pd.DatetimeIndex(time)
    return np.stack([np.asarray(f(t), dtype=np.float64) for f in TIME_FEATURES[freq]], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# split borders and scaler statistics
# ---------------------------------------------------------------------------------------------------------
def split_borders(n: int, protocol: str, step_seconds: float | None = None) -> dict[str, list[int]]:
    """Row ranges ``[start, end)`` of train/val/test for a series of ``n`` rows under ``protocol``."""
    if protocol == "ett":
        if not step_seconds or 86400 % step_seconds:
            raise DataError(f"ETT protocol needs a sampling step that divides a day, got {step_seconds} s")
        month = 30 * int(86400 // step_seconds)
        a, b, c = (month * sum(ETT_MONTHS[: i + 1]) for i in range(3))
        if c > n:
            raise DataError(f"ETT protocol needs {c} rows (20 months of 30 days) but the series has {n}; "
                            f"use --option protocol=ratio")
        return {"train": [0, a], "val": [a, b], "test": [b, c]}
    if protocol == "ratio":
        n_train, n_test = int(n * RATIOS[0]), int(n * RATIOS[2])
        return {"train": [0, n_train], "val": [n_train, n - n_test], "test": [n - n_test, n]}
    raise DataError(f"unknown split protocol {protocol!r}; use one of {PROTOCOLS}")


def scaler_stats(values: np.ndarray, train: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-variate mean and population std of the training rows only (no look-ahead into val/test)."""
    part = values[train[0]: train[1]].astype(np.float64)
    mean, std = part.mean(0), part.std(0)
    return mean, np.where(std > 0, std, 1.0)  # a constant training column divides by 1, as StandardScaler does


# ---------------------------------------------------------------------------------------------------------
# CSV -> store
# ---------------------------------------------------------------------------------------------------------
def _decode(raw: bytes, src: Path) -> tuple[str, str]:
    """Text of a CSV file: UTF-8 (BOM stripped) if valid, else Windows-1252 (then Latin-1) so that a header
    written by a spreadsheet (e.g. 0xB2 for '²') still reads; line endings normalised to LF."""
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    if not text.strip():
        raise DataError(f"{src}: empty file")
    return text.replace("\r\n", "\n").replace("\r", "\n"), ("utf-8" if enc == "utf-8-sig" else enc)


def _date_column(columns: list[str], date_column: str | None, src: Path) -> str:
    if date_column is not None:
        if date_column not in columns:
            raise DataError(f"{src}: no column {date_column!r}; columns are {columns}")
        return date_column
    for c in columns:
        if c.strip().lower() in ("date", "datetime", "time", "timestamp"):
            return c
    return columns[0]


def read_csv(src: str | Path, date_column: str | None = None, fill: str = "error",
             duplicates: str = "error") -> dict[str, Any]:
    """Parse a series CSV: a date column and numeric columns. Returns time, values, names, encoding, missing.

    Timestamps must increase (a step back in time is an error naming the row). Repeated timestamps are an
    error unless ``duplicates`` is "keep" (keep every row: the benchmark's Weather file repeats 2020-05-12 06:00
    and its split borders count that row) or "first" (drop the later rows). Missing values are counted; ``fill`` says what happens: "error" (default: refuse, with the count),
    "ffill" (carry the last value forward, then back-fill a leading gap), "interpolate" (linear in time),
    "drop" (remove rows with any missing value).
    """
    import pandas as pd

    src = Path(src)
    if duplicates not in DUPLICATE_POLICIES:
        raise DataError(f"duplicates={duplicates!r}: use one of {DUPLICATE_POLICIES}")
    if fill not in FILL_POLICIES:
        raise DataError(f"fill={fill!r}: use one of {FILL_POLICIES}")
    raw = src.read_bytes()
    text, encoding = _decode(raw, src)
    try:
        df = pd.read_csv(io.StringIO(text))
    except Exception as e:  # pandas raises several parser error types
        raise DataError(f"{src}: not a readable CSV ({type(e).__name__}: {e})") from None
    if df.shape[1] < 2:
        raise DataError(f"{src}: needs a date column and at least one value column, found {list(df.columns)}")
    dcol = _date_column([str(c) for c in df.columns], date_column, src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when it infers the format per element
        time = pd.to_datetime(df[dcol], errors="coerce")
    if time.isna().any():
        row = int(np.flatnonzero(time.isna().to_numpy())[0])
        raise DataError(f"{src}: column {dcol!r} row {row + 2} ({df[dcol].iloc[row]!r}) is not a date")
    data = df.drop(columns=[dcol])
    numeric = data.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & data.notna()
    if bad.any().any():
        col = str(bad.any().idxmax())
        row = int(np.flatnonzero(bad[col].to_numpy())[0])
        raise DataError(f"{src}: column {col!r} row {row + 2} ({data[col].iloc[row]!r}) is not a number")
    t = time.to_numpy("datetime64[ns]")
    values = numeric.to_numpy(np.float64)
    infinite = np.isinf(values)
    if infinite.any():  # NaN is a missing value (see fill); ±inf is damage
        row, c = map(int, np.argwhere(infinite)[0])
        raise DataError(f"{src}: column {str(data.columns[c])!r} row {row + 2} is {values[row, c]}; "
                        f"{int(infinite.sum())} infinite value(s) in the file: fix or remove them")
    steps = np.diff(t).astype(np.int64)
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0])
        raise DataError(f"{src}: non-monotonic timestamp at row {i + 3} ({t[i + 1]} after {t[i]}); sort the file")
    repeats = np.flatnonzero(steps == 0)
    if len(repeats) and duplicates == "error":
        i = int(repeats[0])
        raise DataError(f"{src}: {len(repeats)} duplicate timestamp(s), first at row {i + 3} ({t[i + 1]}); pass "
                        f"--option duplicates=keep (keep all rows) or duplicates=first (drop repeats)")
    if len(repeats) and duplicates == "first":
        keep = np.ones(len(t), bool)
        keep[repeats + 1] = False
        t, values = t[keep], values[keep]
    missing_rows = int(np.isnan(values).any(1).sum())
    missing = {"rows_with_missing": missing_rows, "missing_values": int(np.isnan(values).sum()), "fill": fill}
    if missing_rows:
        if fill == "error":
            raise DataError(f"{src}: {missing_rows} rows have missing values ({missing['missing_values']} values); "
                            f"choose a policy with --option fill=ffill|interpolate|drop")
        if fill == "drop":
            keep = ~np.isnan(values).any(1)
            values, t = values[keep], t[keep]
        else:
            frame = pd.DataFrame(values, index=pd.DatetimeIndex(t))
            frame = frame.ffill() if fill == "ffill" else frame.interpolate(method="time")
            values = frame.bfill().to_numpy(np.float64)
    return {"time": t, "values": values, "variates": [str(c) for c in data.columns], "encoding": encoding,
            "missing": missing, "duplicates": {"repeated_timestamps": len(repeats), "policy": duplicates}, "sha256": hashlib.sha256(raw).hexdigest(), "date_column": dcol}


def convert_csv(src: Path, out: Path, target: str | None = None, protocol: str = "auto", fill: str = "error",
                duplicates: str = "error", date_column: str | None = None) -> Path:
    """``sciformer data convert FILE.csv OUT.zarr --from csv [--option target=OT protocol=ett|ratio fill=...]``.

    ``target`` defaults to a column named "OT" (the benchmarks' target) or else the last column.
    ``fill`` and ``duplicates``: see :func:`read_csv`. ``protocol`` "auto" picks the ETT month split for files named ETTh*/ETTm*, else 70/10/20.
    """
    import xarray as xr

    src, out = Path(src), Path(out)
    if protocol not in PROTOCOLS:
        raise DataError(f"protocol={protocol!r}: use one of {PROTOCOLS}")
    parsed = read_csv(src, date_column=date_column, fill=fill, duplicates=duplicates)
    t, values, names = parsed["time"], parsed["values"], parsed["variates"]
    if target is None:
        target = "OT" if "OT" in names else names[-1]
    if target not in names:
        raise DataError(f"{src}: target column {target!r} not found; columns are {names}")
    if len(t) < 2:
        raise DataError(f"{src}: a series needs at least 2 rows, found {len(t)}")
    step = float(np.median(np.diff(t).astype(np.int64))) / 1e9
    if protocol == "auto":
        protocol = "ett" if re.match(r"(?i)ett[hm]\d", src.name) else "ratio"
    splits = split_borders(len(t), protocol, step)
    mean, std = scaler_stats(values, splits["train"])
    ds = xr.Dataset(
        {"values": (("time", "variate"), values), "mean": (("variate",), mean), "std": (("variate",), std)},
        coords={"time": t},
        attrs={"layout": "series", "format": 1, "variates": names, "target": target, "step_seconds": step,
               "freq": frequency_code(step), "protocol": protocol, "splits": splits, "source": src.name,
               "sha256": parsed["sha256"], "encoding": parsed["encoding"], "missing": parsed["missing"],
               "duplicates": parsed["duplicates"], "date_column": parsed["date_column"],
               "all_chunks_written": True},
    )
    import zarr

    with atomic_path(out, is_dir=True) as tmp:
        # every chunk is written, all-fill ones too (zarr skips them by default): a missing chunk is damage
        with warnings.catch_warnings(), zarr.config.set({"array.write_empty_chunks": True}):
            warnings.simplefilter("ignore")  # "consolidated metadata is not in the zarr v3 spec yet"
            ds.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------
class SeriesStore:
    """A series store opened for reading. The whole series is small (≤ 10⁷ values) and is read once."""

    def __init__(self, path: str | Path):
        import xarray as xr

        from sciformer.data.commands import store_layout

        self.path = str(path)
        layout = store_layout(Path(path))
        if layout != "series":
            raise DataError(f"{path}: a {layout!r} store, expected a series store (sciformer data convert --from csv)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(self.path, chunks=None, zarr_format=3)
        self.attrs = dict(ds.attrs)
        self.variates: list[str] = list(self.attrs["variates"])
        self.time = ds["time"].values
        self.values = np.asarray(ds["values"].values, np.float64)
        self.mean = np.asarray(ds["mean"].values, np.float64)
        self.std = np.asarray(ds["std"].values, np.float64)
        self.splits = {k: tuple(int(i) for i in v) for k, v in self.attrs["splits"].items()}
        self.target: str = self.attrs["target"]
        self.freq: str = self.attrs["freq"]
        if not np.isfinite(self.values).all():
            raise DataError(f"{path}: values contain NaN/Inf; reconvert with --option fill=...")

    @property
    def name(self) -> str:
        return Path(self.path).name.removesuffix(".zarr")

    def standardised(self) -> np.ndarray:
        """``(values − mean) / std`` with the training-rows statistics, float32 (the benchmark scale)."""
        return ((self.values - self.mean) / self.std).astype(np.float32)

    def stats(self) -> dict[str, dict[str, float]]:
        return {v: {"mean": float(m), "std": float(s)} for v, m, s in zip(self.variates, self.mean, self.std)}


def describe(path: str | Path) -> str:
    """``sciformer data info STORE`` for series stores."""
    s = SeriesStore(path)
    a = s.attrs
    lines = [f"{s.path}: series, {len(s.time)} rows x {len(s.variates)} variates, step {a['step_seconds']:g} s "
             f"(time features '{s.freq}'), target {s.target!r}",
             f"  time: {s.time[0]} .. {s.time[-1]}",
             f"  splits ({a['protocol']}): " + ", ".join(f"{k} rows [{v[0]}, {v[1]})" for k, v in s.splits.items()),
             f"  source: {a.get('source')} (sha256 {str(a.get('sha256'))[:12]}…, {a.get('encoding')}), "
             f"missing: {a.get('missing')}", "",
             f"  {'variate':<24}{'train mean':>14}{'train std':>14}"]
    lines += [f"  {v:<24}{m:14.5g}{sd:14.5g}" for v, m, sd in zip(s.variates, s.mean, s.std)]
    return "\n".join(lines)
