"""The sweep engine: tasks in this process or on local processes, the same results in ``args`` order."""

from __future__ import annotations

import os

import numpy as np
import pytest

from alliance_bayes.sweeps import run_tasks, worker_cache


def _draw(seed: int, n: int) -> tuple[int, float]:
    """A task with a seeded result and the process it ran in."""
    return os.getpid(), float(np.random.default_rng(seed).normal(size=n).sum())


def _cached_id(key: str) -> int:
    return id(worker_cache(key, object))


def _fails(i: int) -> int:
    if i == 2:
        raise ValueError("task 2 failed")
    return i


def test_inline_tasks_run_in_order_in_this_process():
    seen = []
    results = run_tasks(_draw, [(s, 5) for s in range(4)], on_result=lambda i, r: seen.append(i))
    assert seen == [0, 1, 2, 3]
    assert {pid for pid, _ in results} == {os.getpid()}


def test_process_pool_gives_the_inline_results_in_args_order():
    args = [(s, 10) for s in range(6)]
    inline = [value for _, value in run_tasks(_draw, args)]
    seen: dict[int, float] = {}
    pooled = run_tasks(_draw, args, workers=2, on_result=lambda i, r: seen.__setitem__(i, r[1]))
    assert [value for _, value in pooled] == inline
    assert seen == dict(enumerate(inline))  # every result reached the caller as it finished
    assert os.getpid() not in {pid for pid, _ in pooled}


def test_a_failed_task_raises_after_the_finished_ones_are_kept():
    kept = []
    with pytest.raises(ValueError, match="task 2 failed"):
        run_tasks(_fails, [(i,) for i in range(4)], on_result=lambda i, r: kept.append(r))
    assert kept == [0, 1]


def test_worker_cache_makes_once_per_key_and_keeps_one_key():
    first = _cached_id("sweep-a")
    assert _cached_id("sweep-a") == first
    worker_cache("sweep-b", object)
    made = []
    worker_cache("sweep-a", lambda: made.append(1) or object())
    assert made == [1]  # another key's object was dropped: "sweep-a" was made again
