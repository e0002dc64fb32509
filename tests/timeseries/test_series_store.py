"""Series store: CSV parsing edge cases, split borders by protocol, train-only scaler, time features."""

import numpy as np
import pandas as pd
import pytest

from sciformer.data.series import SeriesStore, convert_csv, read_csv, split_borders, time_features
from sciformer.errors import DataError


def _write(path, header: bytes, rows: list[bytes], newline=b"\n"):
    path.write_bytes(newline.join([header, *rows]) + newline)
    return path


def _hourly_csv(path, n, start="2016-07-01 00:00", cols=("a", "b"), newline=b"\n", seed=0):
    t = pd.date_range(start, periods=n, freq="h")
    v = np.random.default_rng(seed).normal(size=(n, len(cols))).round(6)
    rows = [f"{ts:%Y-%m-%d %H:%M:%S}," .encode() + b",".join(f"{x:.6f}".encode() for x in r) for ts, r in zip(t, v)]
    return _write(path, ("date," + ",".join(cols)).encode("utf-8"), rows, newline), v


def test_crlf_and_non_utf8_header(tmp_path):
    # a spreadsheet export: Windows-1252 '²' (0xB2) in a header and CRLF line endings
    src = _write(tmp_path / "w.csv", b"date,SWDR (W/m\xb2),OT", [b"2020-01-01 00:10:00,1.5,2", b"2020-01-01 00:20:00,2.5,3"],
                 newline=b"\r\n")
    parsed = read_csv(src)
    assert parsed["variates"] == ["SWDR (W/m²)", "OT"]
    assert parsed["encoding"] == "cp1252"
    np.testing.assert_array_equal(parsed["values"], [[1.5, 2.0], [2.5, 3.0]])  # no '\r' left in the last column


def test_utf8_bom_and_slash_dates(tmp_path):
    src = _write(tmp_path / "x.csv", "\ufeffdate,0,OT".encode(), [b"1990/1/1 0:00,0.78,0.59", b"1990/1/2 0:00,0.77,0.6"])
    parsed = read_csv(src)
    assert parsed["variates"] == ["0", "OT"] and parsed["date_column"] == "date"
    assert parsed["time"][1] - parsed["time"][0] == np.timedelta64(1, "D")


def test_missing_values_policies(tmp_path):
    src = _write(tmp_path / "m.csv", b"date,a,b", [b"2020-01-01 00:00,1,10", b"2020-01-01 01:00,,20",
                                                   b"2020-01-01 02:00,3,", b"2020-01-01 03:00,4,40"])
    with pytest.raises(DataError, match="2 rows have missing values"):
        read_csv(src)
    np.testing.assert_array_equal(read_csv(src, fill="ffill")["values"], [[1, 10], [1, 20], [3, 20], [4, 40]])
    np.testing.assert_allclose(read_csv(src, fill="interpolate")["values"], [[1, 10], [2, 20], [3, 30], [4, 40]])
    dropped = read_csv(src, fill="drop")
    assert dropped["values"].tolist() == [[1, 10], [4, 40]] and len(dropped["time"]) == 2
    assert dropped["missing"] == {"rows_with_missing": 2, "missing_values": 2, "fill": "drop"}


def test_timestamp_order_and_duplicates(tmp_path):
    back = _write(tmp_path / "b.csv", b"date,a", [b"2020-01-01 01:00,1", b"2020-01-01 00:00,2"])
    with pytest.raises(DataError, match="non-monotonic timestamp at row 3"):
        read_csv(back)
    dup = _write(tmp_path / "d.csv", b"date,a", [b"2020-01-01 00:00,1", b"2020-01-01 01:00,2",
                                                 b"2020-01-01 01:00,2", b"2020-01-01 02:00,3"])
    with pytest.raises(DataError, match="1 duplicate timestamp.*row 4"):
        read_csv(dup)
    assert read_csv(dup, duplicates="keep")["values"].ravel().tolist() == [1, 2, 2, 3]
    assert read_csv(dup, duplicates="first")["values"].ravel().tolist() == [1, 2, 3]


def test_bad_cells_name_column_and_row(tmp_path):
    src = _write(tmp_path / "n.csv", b"date,a,b", [b"2020-01-01 00:00,1,2", b"2020-01-01 01:00,1,oops"])
    with pytest.raises(DataError, match="column 'b' row 3 .*oops"):
        read_csv(src)
    src = _write(tmp_path / "t.csv", b"date,a", [b"2020-01-01 00:00,1", b"yesterday,2"])
    with pytest.raises(DataError, match="row 3 .*not a date"):
        read_csv(src)


def test_split_borders_follow_the_protocols():
    # ETT: 12/4/4 months of 30 days from the start; hourly 720 rows a month, 15-minute 2880
    assert split_borders(17420, "ett", 3600) == {"train": [0, 8640], "val": [8640, 11520], "test": [11520, 14400]}
    assert split_borders(69680, "ett", 900) == {"train": [0, 34560], "val": [34560, 46080], "test": [46080, 57600]}
    # others: int(0.7 n) train, int(0.2 n) test, the rest validation (Weather: 52,696 rows)
    assert split_borders(52696, "ratio") == {"train": [0, 36887], "val": [36887, 42157], "test": [42157, 52696]}
    assert split_borders(966, "ratio") == {"train": [0, 676], "val": [676, 773], "test": [773, 966]}
    with pytest.raises(DataError, match="needs 14400 rows"):
        split_borders(1000, "ett", 3600)


def test_scaler_uses_training_rows_only(tmp_path):
    src, v = _hourly_csv(tmp_path / "s.csv", 100)
    store = SeriesStore(convert_csv(src, tmp_path / "s.zarr"))  # ratio protocol: 70 training rows
    assert store.splits["train"] == (0, 70)
    np.testing.assert_allclose(store.mean, v[:70].mean(0), rtol=1e-12)
    np.testing.assert_allclose(store.std, v[:70].std(0), rtol=1e-12)  # population std, as StandardScaler
    assert not np.allclose(store.mean, v.mean(0))
    np.testing.assert_allclose(store.standardised(), (v - v[:70].mean(0)) / v[:70].std(0), rtol=1e-5, atol=1e-6)


def test_convert_records_target_protocol_and_layout(tmp_path):
    src, _ = _hourly_csv(tmp_path / "ETTh1.csv", 14400, cols=("HUFL", "OT", "x"))
    store = SeriesStore(convert_csv(src, tmp_path / "etth1.zarr"))
    assert store.attrs["layout"] == "series" and store.attrs["protocol"] == "ett"
    assert store.target == "OT" and store.freq == "h" and store.variates == ["HUFL", "OT", "x"]
    assert store.splits == {"train": (0, 8640), "val": (8640, 11520), "test": (11520, 14400)}
    assert store.time.dtype == np.dtype("datetime64[ns]")
    with pytest.raises(DataError, match="target column 'y' not found"):
        convert_csv(src, tmp_path / "o.zarr", target="y")


def test_time_features_hand_computed():
    # 2016-07-01 00:00 was a Friday (dayofweek 4); 2016 is a leap year, so July 1 is day 183
    t = np.array(["2016-07-01T00:00", "2016-12-31T23:45", "2017-01-01T12:30"], dtype="datetime64[ns]")
    h = time_features(t, "h")
    expected = [[0 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5],
                [23 / 23 - 0.5, 5 / 6 - 0.5, 30 / 30 - 0.5, 365 / 365 - 0.5],
                [12 / 23 - 0.5, 6 / 6 - 0.5, 0 / 30 - 0.5, 0 / 365 - 0.5]]
    np.testing.assert_allclose(h, expected, rtol=1e-6)
    t_feats = time_features(t, "t")
    np.testing.assert_allclose(t_feats[:, 0], [0 / 59 - 0.5, 45 / 59 - 0.5, 30 / 59 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(t_feats[:, 1:], h, rtol=1e-6)
    assert (np.abs(time_features(t, "w")) <= 0.5).all() and time_features(t, "d").shape == (3, 3)


def test_real_etth1_store(tmp_path, shared_data):
    src = shared_data / "timeseries" / "ETTh1.csv"
    if not src.exists():
        pytest.skip("ETTh1.csv not in shared data")
    store = SeriesStore(convert_csv(src, tmp_path / "etth1.zarr"))
    raw = pd.read_csv(src)
    assert store.values.shape == (17420, 7) and store.variates == list(raw.columns[1:])
    np.testing.assert_allclose(store.mean, raw.iloc[:8640, 1:].to_numpy().mean(0), rtol=1e-12)
    assert store.attrs["sha256"].startswith("f18de3ad")
