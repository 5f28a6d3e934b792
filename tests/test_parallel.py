"""How many cores a stage uses: the cores its process may run on, not every core of the machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = ("import torch; from birdclef.device import set_threads; "
        "from birdclef.parallel import usable_cores, worker_count; set_threads(0); "
        "print(usable_cores(), worker_count(0), torch.get_num_threads())")


def counts(pin: set[int] | None = None) -> list[int]:
    """usable cores, default pool workers and torch threads of a fresh process (pinned to `pin`)."""
    pin_to = (lambda: os.sched_setaffinity(0, pin)) if pin else None
    out = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, check=True,
                         preexec_fn=pin_to).stdout
    return [int(v) for v in out.split()]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_threads_and_workers_follow_the_cpu_affinity() -> None:
    mine = len(os.sched_getaffinity(0))
    assert counts() == [mine, mine, mine]
    assert counts({min(os.sched_getaffinity(0))}) == [1, 1, 1]  # as under taskset or a cpuset
