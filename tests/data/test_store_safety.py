"""No silent data loss: missing/short chunks, `data info --verify`, write locks, crash-safe replace, full disk."""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from heat import heat_store

from sciformer.cli import main as cli
from sciformer.data.store import open_store, verify_store, write_store
from sciformer.errors import DataError
from sciformer.io import DiskFullError, LockedError, atomic_path, exclusive_lock, lock_file, write_json

REPO = Path(__file__).resolve().parents[2]


def _chunk(store: Path, name: str, i: int, t: int) -> Path:
    return store / name / "c" / str(i) / str(t) / "0" / "0"


def _leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


# ---- missing and short chunks ------------------------------------------------------------------------
@pytest.mark.parametrize("url", [False, True], ids=["fast-reader", "zarr-reader"])
def test_missing_chunk_is_a_data_error(tmp_path, url):
    path = heat_store(tmp_path / "h.zarr", ["u", "v"], 3, seed=0)
    _chunk(path, "u", 1, 2).unlink()
    s = open_store(f"file://{path}" if url else path)
    assert bool(s._fast) != url
    with pytest.raises(DataError, match=r"h\.zarr: variable 'u' trajectory 1, time index 2: chunk .*missing"):
        s.read("u", 1, 2)
    s.read("u", 1, 1)  # the others still read
    s.read("v", 1, 2)


def test_all_zero_snapshot_is_written_so_absence_means_damage(tmp_path):
    u = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    u[1, 2] = 0.0  # zarr would skip this chunk as equal to the fill value
    path = write_store(tmp_path / "z.zarr", {"u": u}, {"u": {"role": "state"}}, np.arange(3),
                       {"x": np.arange(4), "y": np.arange(4)})
    assert _chunk(path, "u", 1, 2).exists() and open_store(path).complete
    np.testing.assert_array_equal(open_store(path).read("u", 1, 2), 0.0)


def test_truncated_chunk_names_store_variable_and_index(tmp_path):
    path = heat_store(tmp_path / "h.zarr", ["u"], 2, seed=0)
    f = _chunk(path, "u", 1, 3)
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(DataError, match=r"h\.zarr: trajectory 1, time index 3: chunk .* of variable 'u' is truncated"):
        open_store(path).read("u", 1, 3)


# ---- verify ------------------------------------------------------------------------------------------
def test_verify_ok_store(tmp_path, capsys):
    path = heat_store(tmp_path / "h.zarr", ["u", "v"], 2, seed=0)
    assert verify_store(path).ok
    assert cli(["data", "info", "--verify", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{path}: verified 6 arrays, 24 chunks: all present and finite"]


def test_verify_finds_nan_missing_and_truncated_chunks(tmp_path, capsys):
    import zarr

    path = heat_store(tmp_path / "h.zarr", ["u", "v"], 3, seed=0)
    with zarr.config.set({"array.write_empty_chunks": True}):
        zarr.open_group(str(path), mode="r+")["v"][2, 4, 3, 5] = np.nan
    _chunk(path, "u", 0, 1).unlink()
    f = _chunk(path, "u", 2, 0)
    f.write_bytes(f.read_bytes()[:30])
    result = verify_store(path)
    assert not result.ok and len(result.problems) == 3, result.problems
    text = "\n".join(result.problems)
    assert "variable 'u' trajectory 0, time index 1: chunk u/c/0/1/0/0 is missing" in text
    assert "variable 'u' trajectory 2, time index 0" in text and "truncated" in text
    assert "variable 'v' trajectory 2, time index 4" in text and "NaN/Inf" in text
    assert cli(["data", "info", "--verify", str(path)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "3 problem(s)" in err[0] and "h.zarr" in err[0]
    assert "trajectory 0, time index 1" in captured.out
    # plain `info` reports the damage instead of crashing on it
    assert cli(["data", "info", str(path)]) == 0
    assert "chunk" in capsys.readouterr().out


def test_verify_atom_store(tmp_path):
    from sciformer.data import atoms as A

    systems = [{"atomic_numbers": [6, 1], "positions": [[0, 0, 0], [1.1, 0, 0]], "smiles": "C"} for _ in range(3)]
    path = A.write_store(tmp_path / "a.zarr", systems, domain="molecule", source="test", report={})
    assert verify_store(path).ok  # all-zero cells and all-False pbc are written, not skipped
    (path / "positions" / "c" / "0" / "0").unlink()
    assert "array 'positions' chunk (0, 0): chunk positions/c/0/0 is missing" in verify_store(path).problems[0]


# ---- locks -------------------------------------------------------------------------------------------
def _holder(target: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import time
        from sciformer.io import exclusive_lock
        with exclusive_lock({str(target)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout.readline().strip() == "locked"
    return p


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_live_lock_of_another_process_is_refused_then_stale_one_taken_over(tmp_path, caplog):
    target = tmp_path / "h.zarr"
    proc = _holder(target)
    try:
        holder = json.loads(lock_file(target).read_text())
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
        with pytest.raises(LockedError, match=rf"h\.zarr: another writer holds it \(pid {proc.pid} on "):
            exclusive_lock(target).acquire()
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            heat_store(target, ["u"], 2, seed=0)  # a store writer
        assert not target.exists() and not (tmp_path / ".h.zarr.partial").exists()
    finally:
        proc.kill()
        proc.wait()
    assert lock_file(target).exists()  # SIGKILL: the lock file stays, with a dead pid
    with caplog.at_level(logging.WARNING, logger="sciformer.io"):
        heat_store(target, ["u"], 2, seed=0)
    assert "taking over the stale lock" in caplog.text and f"pid {proc.pid}" in caplog.text
    assert open_store(target).n_trajectories == 2 and not lock_file(target).exists()


def test_lock_file_with_dead_pid_is_taken_over_and_live_pid_refused(tmp_path, caplog):
    target = tmp_path / "out"
    dead = _dead_pid()
    lock_file(target).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="sciformer.io"):
        with exclusive_lock(target):
            assert json.loads(lock_file(target).read_text())["pid"] == os.getpid()
    assert f"stale lock {lock_file(target)} of pid {dead}" in caplog.text and not lock_file(target).exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a live pid in the file refuses, even without the flock held
        lock_file(target).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(LockedError, match=f"pid {sleeper.pid}"):
            exclusive_lock(target).acquire()
        lock_file(target).write_text(json.dumps({"pid": dead, "host": "another-host"}))
        with pytest.raises(LockedError, match=f"pid {dead} on another-host"):  # cannot tell: refuse
            exclusive_lock(target).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    target = tmp_path / "s.zarr"
    with exclusive_lock(target), exclusive_lock(target):
        assert lock_file(target).exists()
        heat_store(target, ["u"], 2, seed=0)  # the writer takes the same lock
        assert lock_file(target).exists()
    assert not lock_file(target).exists()


# ---- crash-safe directory replace --------------------------------------------------------------------
CRASH = """
import os, sys
sys.path.insert(0, {helpers!r})
import sciformer.io as io
from heat import heat_store
mode = {mode!r}
if mode == "fallback-between-renames":
    def no_exchange(a, b):
        raise OSError(22, "unsupported")
    io._exchange = no_exchange
    real = os.rename
    def rename(a, b):
        real(a, b)
        if str(b).endswith(".old"):
            os._exit(3)
    io.os.rename = rename
elif mode == "after-exchange":
    real = io._exchange
    def exchange(a, b):
        real(a, b)
        os._exit(3)
    io._exchange = exchange
heat_store({target!r}, ["u"], 2, seed=1)
"""


@pytest.mark.parametrize("mode", ["fallback-between-renames", "after-exchange"])
def test_crash_during_replace_leaves_a_complete_version(tmp_path, mode, caplog):
    target = tmp_path / "h.zarr"
    heat_store(target, ["u"], 2, seed=0)
    old = open_store(target).trajectory(0)["u"]
    code = CRASH.format(helpers=str(REPO / "tests" / "helpers"), mode=mode, target=str(target))
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 3  # "crashed"
    if mode == "fallback-between-renames":
        assert not target.exists() and (tmp_path / ".h.zarr.old").is_dir()  # only the old version is complete
        with caplog.at_level(logging.WARNING, logger="sciformer.io"):
            got = open_store(target).trajectory(0)["u"]  # a reader recovers it
        np.testing.assert_array_equal(got, old)
        assert "recovered the previous version" in caplog.text
    else:  # swapped in: readers see the new version; the old one is a leftover
        got = open_store(target).trajectory(0)["u"]
        assert not np.array_equal(got, old)
    assert verify_store(target).ok
    heat_store(target, ["u"], 2, seed=2)  # the next write cleans up after the crash
    assert _leftovers(tmp_path, {"h.zarr"}) == []
    assert verify_store(target).ok


def test_replace_dir_swaps_atomically(tmp_path):
    target = tmp_path / "d"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "v").write_text("1")
    ino = os.stat(target).st_ino
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2" and os.stat(target).st_ino != ino
    assert _leftovers(tmp_path, {"d"}) == []


# ---- full disk ---------------------------------------------------------------------------------------
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_json_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", _enospc)
    with pytest.raises(DiskFullError, match=r"results\.json: cannot write, the disk is full"):
        write_json(tmp_path / "results.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fail_at", ["chunks", "finalize"])
def test_full_disk_field_store_leaves_nothing(tmp_path, monkeypatch, fail_at):
    from zarr.storage import LocalStore

    real = LocalStore.set

    async def full(self, key, value):
        if fail_at == "chunks" and "/c/" in key or fail_at == "finalize" and key == "zarr.json" and \
                "consolidated_metadata" in value.to_bytes().decode(errors="ignore"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full)
    with pytest.raises(DiskFullError, match=r"h\.zarr: cannot write, the disk is full"):
        heat_store(tmp_path / "h.zarr", ["u"], 2, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_convert_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from zarr.storage import LocalStore

    csv = tmp_path / "src" / "s.csv"
    csv.parent.mkdir()
    csv.write_text("date,a,OT\n" + "".join(f"2020-01-01 {h:02d}:00:00,{h},{2 * h}\n" for h in range(24)))

    async def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStore, "set", full)
    out = tmp_path / "out"
    assert cli(["data", "convert", str(csv), str(out / "s.zarr"), "--from", "csv"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s.zarr: cannot write, the disk is full" in err[0]
    assert list(out.iterdir()) == []
