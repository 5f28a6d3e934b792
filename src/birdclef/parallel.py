"""The one process pool: decoding in preprocess and predict, rendering in the sample generator.

Workers come from a fork server: the calling process already runs torch, ONNX Runtime, MLflow and
tqdm threads, and forking it can deadlock or crash the child. At most `in_flight` items are
submitted ahead of the one being consumed, so memory stays flat however many items there are, and
results come back in input order, so outputs do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset, a test
    worker's core), which children inherit; every core where the OS has no affinity call."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(requested: int) -> int:
    """`requested` processes, or one per usable core when 0."""
    return requested or usable_cores()


def ordered_map(
    fn: Callable[[Item], Result], items: Iterable[Item], workers: int, in_flight: int | None = None
) -> Iterator[Result]:
    """fn(item) for every item, in input order, computed by `workers` processes (here when 1).

    `fn` must be importable by the workers (a module-level function or a functools.partial of
    one). `in_flight` bounds the submitted but not yet consumed items (default 2 x workers).
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    limit = in_flight or 2 * workers
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers) as pool:
        queue = iter(items)
        pending: deque[Any] = deque(pool.apply_async(fn, (item,)) for _, item in zip(range(limit), queue))
        while pending:
            result = pending.popleft().get()
            for item in queue:
                pending.append(pool.apply_async(fn, (item,)))
                break
            yield result
