"""Which Dask cluster a CLI run uses: a LocalCluster of single-threaded worker processes, or an existing one."""

from __future__ import annotations

import os
from contextlib import contextmanager

from pointseg.errors import PointsegError

EXTRA_HINT = 'pip install "pointseg[distributed]"'


def require_distributed():
    """Import ``distributed`` or fail with one line naming the extra that installs it."""
    try:
        import distributed
    except ImportError:
        raise PointsegError(f"--workers/--scheduler need dask.distributed; install it with {EXTRA_HINT}") from None
    return distributed


def worker_count(workers: str) -> int:
    if workers == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        n = int(workers)
    except ValueError:
        n = 0
    if n < 1:
        raise PointsegError(f"--workers takes a positive number or 'auto', got {workers!r}")
    return n


@contextmanager
def open_client(workers: str | None = None, scheduler: str | None = None, scheduler_file: str | None = None):
    """Yield a ``distributed.Client`` (or ``None`` for an in-process run) and close what it started."""
    chosen = [x for x in (workers, scheduler, scheduler_file) if x]
    if len(chosen) > 1:
        raise PointsegError("give one of --workers, --scheduler and --scheduler-file")
    if not chosen:
        yield None
        return
    distributed = require_distributed()
    if workers:
        n = worker_count(workers)
        # one thread per worker process: torch runs single-threaded there, so N workers use N cores
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = (distributed.Client(scheduler_file=scheduler_file, timeout="20s") if scheduler_file
                  else distributed.Client(scheduler, timeout="20s"))
    except (OSError, TimeoutError, ValueError) as exc:
        raise PointsegError(f"cannot reach the Dask scheduler {scheduler or scheduler_file}: {exc}") from None
    with client:
        yield client
