"""Preemption: SIGTERM asks the run to stop; every process of a job stops at the same step.

TPU pods and SLURM send SIGTERM to each host separately and not at the same instant. Each
process only notes the signal; `should_stop(step)` turns the notes into one decision: on one
process the note itself, on several an all-gather of every process's note at each step
boundary, so all of them save the same step and exit together (a host that saved step n
while another went on to n+1 would leave a checkpoint no process can resume from).
"""
from __future__ import annotations

import signal

import jax
import numpy as np


class PreemptionWatcher:
    """Context manager: installs the SIGTERM handler, restores the previous one on exit."""

    def __init__(self):
        self.requested = False  # this process received SIGTERM
        self._previous = None

    def __enter__(self) -> 'PreemptionWatcher':
        self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGTERM, self._previous)

    def _note(self, *_):
        self.requested = True

    def should_stop(self) -> bool:
        """Whether the job stops after this step: the same answer on every process."""
        return any_process(self.requested)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one (a collective across
    processes when there are several; every process must call it at the same point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.any(flags))
