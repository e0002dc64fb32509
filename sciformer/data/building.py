"""Shared machinery of `sciformer data build`: run one function per trajectory over a process pool.

A builder describes its store (a :class:`~sciformer.data.store.FieldStoreWriter`) and a picklable,
module-level ``make(i, **params) -> {variable: array}`` that generates trajectory ``i`` from its own random
stream (``numpy.random.default_rng([seed, i])``). :func:`run_build` skips trajectories already written (resume
after an interruption), lets each worker write its own chunks and progress record, shows a rich progress bar,
and finalizes the store (statistics in trajectory order, atomic rename). Because trajectory ``i`` depends only
on ``(seed, i)`` and the statistics are combined in order, the finished store does not depend on the number of
workers or on interruptions.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from sciformer.data.store import FieldStoreWriter
from sciformer.errors import DataError
from sciformer.io import DiskFullError


def default_workers() -> int:
    """The cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _write_one(writer: FieldStoreWriter, make: Callable[..., dict], i: int, params: dict[str, Any]) -> int:
    try:
        fields = make(i, **params)
    except FloatingPointError as e:
        raise DataError(f"{writer.path}: trajectory {i}: the solver failed ({e}); lower cfl/dt or raise the "
                        "resolution or viscosity") from None
    writer.write_trajectory(i, fields)
    return i


def run_build(writer: FieldStoreWriter, make: Callable[..., dict], params: dict[str, Any], label: str,
              workers: int | None = None) -> Path:
    """Generate every unwritten trajectory with ``make(i, **params)``, write it, then finalize the store.

    ``workers`` defaults to all usable cores (1 runs in this process). Worker processes are spawned (not
    forked), so ``make`` must be importable at module level. On a full disk the partial store is removed and
    :class:`~sciformer.io.DiskFullError` says so; after any other error it is kept for a resumed run.
    """
    try:
        return _run_build(writer, make, params, label, workers)
    except DiskFullError:
        writer.abort()
        raise
    finally:
        writer.release()


def _run_build(writer: FieldStoreWriter, make: Callable[..., dict], params: dict[str, Any], label: str,
               workers: int | None = None) -> Path:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    remaining = [i for i in range(writer.n) if not writer.is_done(i)]
    workers = max(1, min(int(workers or default_workers()), len(remaining) or 1))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=writer.n, completed=writer.n - len(remaining))
        if workers == 1:
            for i in remaining:
                _write_one(writer, make, i, params)
                bar.advance(task)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                pending = {pool.submit(_write_one, writer, make, i, params) for i in remaining}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            f.result()  # re-raise a worker's error here
                            bar.advance(task)
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
    return writer.finalize()
