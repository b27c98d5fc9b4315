"""Where many independent fits run: local processes, or a dask.distributed cluster.

A sweep (SBC replicates) submits one task per unit of work to a :class:`concurrent.futures.Executor`
and collects the results in the calling process, which alone writes files, so that workers need no
shared file system. Each worker process keeps what it compiled between tasks (see
:func:`alliance_bayes.checks.sbc._worker_for`), so a model is compiled once per worker, and tasks
are handed out one at a time as workers free up (dynamic balancing, whichever executor).

``dask=None`` gives local processes (:class:`~concurrent.futures.ProcessPoolExecutor`, spawned, so
that no compiled state is forked); ``dask="local"`` a :class:`distributed.LocalCluster` of
``workers`` single-threaded processes; any other string is a scheduler address
(``tcp://host:8786``) of a cluster whose workers have this package installed. dask.distributed is
an optional extra (``pip install "alliance-bayes[dask]"``).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager

__all__ = ["SweepError", "executor"]


class SweepError(RuntimeError):
    """The requested executor cannot be started (e.g. dask.distributed is not installed)."""


@contextmanager
def executor(dask: str | None = None, workers: int = 1) -> Iterator[Executor]:
    """A ``concurrent.futures`` executor: local processes, a local Dask cluster, or a remote one."""
    if dask is None:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            yield pool
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise SweepError(
            "--dask needs dask.distributed: pip install 'alliance-bayes[dask]'"
        ) from err
    if dask == "local":
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client.get_executor()
        return
    with Client(dask) as client:
        yield client.get_executor()
