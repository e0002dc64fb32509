"""Safe writes: atomic files and directories, one writer per path, clear errors on a full disk.

- :func:`atomic_path` yields a temporary sibling and moves it onto the target only once it is complete.
- :func:`exclusive_lock` makes a writer the only one for a path (DECISIONS "Locks"): a lock file beside the
  target, ``.NAME.lock``, holds the writer's pid and host. A stale lock (its pid dead on this host) is taken
  over with a log line; a live one is refused with a :class:`LockedError` naming the pid.
- :func:`replace_dir` swaps a new directory in with one atomic ``renameat2(RENAME_EXCHANGE)``, so a reader
  always finds a complete version (see its docstring for filesystems without it).
- A full disk (``ENOSPC``/``EDQUOT``) becomes a :class:`DiskFullError` naming the target, after the temporary
  files are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sciformer.errors import SciformerError

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(SciformerError):
    """No space left on the device (or quota exceeded) while writing a target; nothing partial is left."""


class LockedError(SciformerError):
    """Another live process holds the write lock of a target."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


def disk_full_error(target: str | os.PathLike, e: OSError) -> DiskFullError:
    what = "the disk quota is exceeded" if e.errno == errno.EDQUOT else "the disk is full"
    return DiskFullError(f"{target}: cannot write, {what} (no space left on {Path(target).parent or '.'}); "
                         "free some space and rerun (nothing partial was left behind)")


# ---- locks -----------------------------------------------------------------------------------------
def lock_file(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` in the same directory."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


_HELD: dict[str, list] = {}  # lock file -> [fd, count, pid] of the locks this process holds (re-entrant)
_HELD_GUARD = threading.Lock()


class ExclusiveLock:
    """The write lock of one target path; see :func:`exclusive_lock`. ``acquire()``/``release()`` for a
    lock held across calls (a store writer from ``__init__`` to ``finalize``), or use it as a context manager."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = lock_file(self.target)
        self.held = False

    def acquire(self) -> ExclusiveLock:
        if self.held:
            return self
        key = str(self.path.absolute())
        with _HELD_GUARD:
            entry = _HELD.get(key)
            if entry is not None and entry[2] == os.getpid():  # re-entrant within this process
                entry[1] += 1
                self.held = True
                return self
            _HELD.pop(key, None)  # inherited through fork: not ours
            fd = self._take()
            _HELD[key] = [fd, 1, os.getpid()]
        self.held = True
        return self

    def _take(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if is_disk_full(e):
                    raise disk_full_error(self.target, e) from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process holds it right now
                os.close(fd)
                time.sleep(0.01)  # let a writer that has just created the file write its pid
                self._refuse(_read_holder(self.path))
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our flock: try again
                os.close(fd)
                continue
            try:
                self._check_and_write(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise LockedError(f"{self.target}: could not take the lock {self.path} (it keeps changing)")

    def _check_and_write(self, fd: int) -> None:
        holder = _read_holder(self.path)
        pid, host = holder.get("pid"), holder.get("host")
        me = socket.gethostname()
        if isinstance(pid, int) and pid != os.getpid():
            if host != me or _pid_alive(pid):
                self._refuse(holder)
            log.warning("%s: taking over the stale lock %s of pid %d on %s (no longer running)",
                        self.target, self.path, pid, host)
        elif holder and not isinstance(pid, int):
            log.warning("%s: taking over the unreadable lock %s", self.target, self.path)
        body = json.dumps({"pid": os.getpid(), "host": me, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "target": str(self.target)}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, body, 0)
            os.fsync(fd)
        except OSError as e:
            if is_disk_full(e):
                os.unlink(self.path)
                raise disk_full_error(self.target, e) from None
            raise

    def _refuse(self, holder: dict) -> None:
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        since = f" since {holder['since']}" if holder.get("since") else ""
        raise LockedError(f"{self.target}: another writer holds it (pid {pid} on {host}{since}; lock file "
                          f"{self.path}); wait for that process to finish or stop it, or write elsewhere")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = str(self.path.absolute())
        with _HELD_GUARD:
            entry = _HELD.get(key)
            if entry is None or entry[2] != os.getpid():
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still holding the flock: a waiting opener sees a new inode
            os.close(entry[0])

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def exclusive_lock(target: str | os.PathLike) -> ExclusiveLock:
    """Hold the exclusive write lock of ``target`` (a store, a sweep's ``--out`` directory, ...)::

        with exclusive_lock(out_dir):
            ...  # the only writer of out_dir

    The lock file ``.NAME.lock`` beside ``target`` holds ``{"pid", "host", "since", "target"}``. It is held with
    ``flock`` as well, so a crashed holder never blocks anyone: its file is then stale (pid dead on this host)
    and is taken over with a log line. A live holder makes this raise :class:`LockedError` naming its pid and
    host. The lock is re-entrant within a process (it guards against other processes) and is released, and
    its file removed, on exit. Raises :class:`DiskFullError` if the lock file cannot be written.
    """
    return ExclusiveLock(target)


# ---- directory replace -----------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); OSError where unsupported."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(a), None, str(b))


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def replace_dir(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the complete directory ``new`` onto ``path``, replacing what is there; hold ``path``'s lock.

    On Linux filesystems with ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs, ...) the old and new
    versions are swapped in one atomic step, then the old one (now under the temporary name) is deleted: a
    reader always finds a complete version at ``path``, and a crash leaves either the old or the new one there
    (plus a leftover temporary that the next write removes). Elsewhere (NFS, non-Linux) it falls back to two
    renames, ``path → .NAME.old`` then ``new → path``; a crash between them leaves the complete old version in
    ``.NAME.old``, which :func:`recover_dir` moves back on the next write or open (it is never deleted while
    ``path`` is missing).
    """
    new, path = Path(new), Path(path)
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    try:
        _exchange(new, path)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            raise
        old = _old(path)
        _remove(old)
        os.rename(path, old)
        os.rename(new, path)
        _remove(old)
        return
    _remove(new)  # the old version, now under the temporary name


def recover_dir(path: str | os.PathLike) -> bool:
    """Finish or undo an interrupted :func:`replace_dir` of ``path``; call it holding ``path``'s lock.

    Moves ``.NAME.old`` back when ``path`` is missing (returns True), deletes it when ``path`` exists, and
    removes temporaries left by crashed writers (``.NAME.tmp-*``).
    """
    path = Path(path)
    old, recovered = _old(path), False
    if os.path.lexists(old):
        if not os.path.lexists(path):
            os.rename(old, path)
            log.warning("%s: recovered the previous version from %s (an interrupted replace)", path, old)
            recovered = True
        else:
            _remove(old)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f"{_tmp_prefix(path)}*"):
            _remove(leftover)
    return recovered


def recover_for_reading(path: str | os.PathLike) -> bool:
    """For readers: if ``path`` is missing after an interrupted replace, move its ``.NAME.old`` back (unless
    a live writer holds the lock, or the directory is read-only). True if ``path`` exists afterwards."""
    path = Path(path)
    if "://" in str(path) or os.path.lexists(path):
        return os.path.lexists(path)
    if not os.path.lexists(_old(path)):
        return False
    try:
        with exclusive_lock(path):
            if not os.path.lexists(path) and os.path.lexists(_old(path)):
                os.rename(_old(path), path)
                log.warning("%s: recovered the previous version from %s (an interrupted replace)", path, _old(path))
    except (LockedError, OSError):
        pass
    return os.path.lexists(path)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# ---- atomic writes ---------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False, lock: bool | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success move it onto ``path``, on failure remove it.

    The temporary (``.NAME.tmp-*``) lives in the same directory so the final move is a rename on one
    filesystem. Files are replaced with ``os.replace``; directories with :func:`replace_dir`, which never
    leaves ``path`` without a complete version. ``lock`` (default: True for directories) holds
    :func:`exclusive_lock` on ``path`` for the whole write, so a second writer is refused, and first recovers
    what a crashed writer left (:func:`recover_dir`). A full disk raises :class:`DiskFullError` naming
    ``path`` after the temporary is removed.
    """
    path = Path(path)
    lock = is_dir if lock is None else lock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    with exclusive_lock(path) if lock else contextlib.nullcontext():
        if is_dir:
            recover_dir(path)
        tmp = None
        try:
            if is_dir:
                tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
            else:
                fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
                os.close(fd)
                tmp = Path(name)
            yield tmp
            if is_dir:
                replace_dir(tmp, path)
            else:
                os.replace(tmp, path)
        except BaseException as e:
            if tmp is not None:
                _remove(tmp)
            if is_disk_full(e):
                raise disk_full_error(path, e) from None
            raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
