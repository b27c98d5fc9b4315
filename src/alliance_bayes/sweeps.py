"""Where many independent fits run: local processes, or a dask.distributed cluster.

A sweep (SBC replicates, K-fold folds, prior-set refits) submits one task per unit of work to a
:class:`concurrent.futures.Executor` (:func:`run_tasks`) and collects the results in the calling
process, which alone writes files, so that workers need no shared file system. Each worker process
keeps what it compiled between tasks (:func:`worker_cache`), so a model is compiled once per
worker, and tasks are handed out one at a time as workers free up (dynamic balancing, whichever
executor).

``dask=None`` gives local processes (:class:`~concurrent.futures.ProcessPoolExecutor`, spawned, so
that no compiled state is forked); ``dask="local"`` a :class:`distributed.LocalCluster` of
``workers`` single-threaded processes; any other string is a scheduler address
(``tcp://host:8786``) of a cluster whose workers have this package installed. dask.distributed is
an optional extra (``pip install "alliance-bayes[dask]"``).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

__all__ = ["SweepError", "executor", "run_tasks", "worker_cache"]


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


def run_tasks(
    task: Callable[..., Any],
    args: Sequence[tuple],
    *,
    workers: int = 1,
    dask: str | None = None,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[task(*a) for a in args]``, in this process (``workers=1``, no ``dask``) or on an executor.

    ``task`` must be a module-level function (it is pickled by name) and ``args`` picklable.
    ``on_result(i, result)`` is called in this process as each task finishes (in order of
    completion on an executor), so that a caller can keep finished work when a later task fails.
    Results are returned in the order of ``args``.
    """
    results: list[Any] = [None] * len(args)

    def done(i: int, value: Any) -> None:
        results[i] = value
        if on_result is not None:
            on_result(i, value)

    if not args:
        return results
    if max(1, min(workers, len(args))) == 1 and dask is None:
        for i, a in enumerate(args):
            done(i, task(*a))
        return results
    with executor(dask, max(1, min(workers, len(args)))) as pool:
        futures = {pool.submit(task, *a): i for i, a in enumerate(args)}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return results


#: Per process: what the tasks of the current sweep compiled, under the sweep's key.
_CACHE: dict[str, Any] = {}


def worker_cache(key: str, make: Callable[[], Any]) -> Any:
    """This process's object for ``key``, made by ``make()`` on its first task only.

    One sweep at a time per process: an object made for another key is dropped, so that a
    long-lived worker (a Dask cluster's) does not keep every compiled model it has seen.
    """
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]
