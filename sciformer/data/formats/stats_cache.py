"""Facts derived from external files in one pass (statistics, a collection's index), computed once and cached.

A lazy source without statistics (a PDEBench file, a Well directory without ``stats.yaml``) would otherwise
re-read all its data every time it is opened. The result is kept as JSON:

- beside the data, ``.<name>.sciformer-<kind>.json`` in the data's folder, when that folder is writable;
- else under ``$XDG_CACHE_HOME/sciformer/`` (default ``~/.cache/sciformer``), named by a hash of the path.

The cache records each input file's absolute path, size and modification time (ns), and a hash of the readers'
code (``sciformer/data/formats/*.py``): a changed, added or removed file, or a reader that now reads the file
differently, makes the entry stale and it is recomputed. Writes are atomic (:func:`sciformer.io.write_json`), so
concurrent processes (DDP ranks, loader workers) computing the same entry at once leave one complete file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

VERSION = 1
log = logging.getLogger(__name__)


_READERS: list[str] = []


def readers_hash() -> str:
    """sha256 of the format readers' source files (memoised per process)."""
    if not _READERS:
        digest = hashlib.sha256()
        for f in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(f.name.encode() + f.read_bytes())
        _READERS.append(digest.hexdigest()[:16])
    return _READERS[0]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sciformer`` (``~/.cache/sciformer`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sciformer"


def fingerprint(files: Iterable[str | os.PathLike]) -> list[list]:
    """``[[absolute path, size, mtime_ns], ...]``; fsspec URLs use their filesystem's size and mtime."""
    out = []
    for f in files:
        f = str(f)
        if "://" in f:
            import fsspec

            fs, p = fsspec.core.url_to_fs(f)
            info = fs.info(p)
            mtime = info.get("mtime", info.get("LastModified", info.get("created", "")))
            out.append([f, int(info.get("size") or 0), str(mtime)])
        else:
            st = os.stat(f)
            out.append([os.path.abspath(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def locations(anchor: str | os.PathLike, kind: str) -> list[Path]:
    """Where an entry for ``anchor`` (a file or folder) may live, in the order tried."""
    anchor = str(anchor).rstrip("/")
    digest = hashlib.sha256(anchor.encode()).hexdigest()[:16]
    name = anchor.rsplit("/", 1)[-1] or "root"
    user = user_cache_dir() / f"{digest}-{name}.{kind}.json"
    if "://" in anchor:
        return [user]
    a = Path(os.path.abspath(anchor))
    return [a.parent / f".{a.name}.sciformer-{kind}.json", user]


def _read(path: Path, key: dict) -> Any:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry.get("value")


def cached(anchor: str | os.PathLike, kind: str, files: Iterable[str | os.PathLike], compute: Callable[[], Any],
           extra: Any = None) -> Any:
    """``compute()`` (JSON-serialisable), or its cached value if ``files`` (and ``extra``) are unchanged."""
    from sciformer.io import write_json

    key = {"version": VERSION, "readers": readers_hash(), "kind": kind, "files": fingerprint(files), "extra": extra}
    key = json.loads(json.dumps(key))  # the form it takes after a round trip through the file
    places = locations(anchor, kind)
    for p in places:
        value = _read(p, key)
        if value is not None:
            return value
    value = compute()
    entry = {"key": key, "value": value}
    for p in places:
        if p.parent.exists() and not os.access(p.parent, os.W_OK):
            continue
        try:
            write_json(p, entry)
            return value
        except OSError as e:  # a read-only filesystem, a full disk: try the next place, else keep it in memory
            log.debug("cannot write cache %s (%s)", p, e)
    log.warning("could not cache %s for %s in %s; it will be recomputed next time", kind, anchor,
                " or ".join(map(str, places)))
    return value


def source_stats(source, files: Iterable[str | os.PathLike] | None = None) -> dict:
    """Mean/std per variable of a lazy source (its ``compute_stats`` streaming pass), cached by its files."""
    stats = cached(source.path, "stats", files if files is not None else [source.path], source.compute_stats,
                   extra=list(source.variables))
    source.stats = {k: {"mean": float(v["mean"]), "std": float(v["std"])} for k, v in stats.items()}
    return source.stats
