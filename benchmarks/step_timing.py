"""How the benchmarks time a call, the same way for the JAX and the PyTorch side: wall and
process CPU seconds per call, their summary or median, and peak host memory growth."""
from __future__ import annotations

import os
import statistics
import time


def timed_steps(step, steps: int, warmup: int, label: str = '') -> dict:
    """Runs `warmup` then `steps` calls of `step` (which must wait for its results); returns
    wall and process CPU seconds (all threads) per call. CPU seconds barely move when other
    jobs share the host; wall seconds do."""
    wall = {'warmup': [], 'timed': []}
    cpu = {'warmup': [], 'timed': []}
    for phase, count in (('warmup', warmup), ('timed', steps)):
        for index in range(count):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[phase].append(time.perf_counter() - start)
            cpu[phase].append(time.process_time() - start_cpu)
            if wall[phase][-1] > 5:  # long steps (B/16 on a CPU): show progress
                print(f'  {label} {phase} step {index + 1}/{count}: {wall[phase][-1]:.1f} s '
                      f'(CPU {cpu[phase][-1]:.1f} s)', flush=True)
    return {'wall': wall, 'cpu': cpu}


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median and every wall time of `repeats` calls of `fn` (which must wait for its own
    result) after `warmup` untimed ones (the first compiles, for jitted functions)."""
    times = timed_steps(fn, repeats, warmup)['wall']['timed']
    return statistics.median(times), times


def summary(timing: dict, batch: int) -> dict:
    times, cpu = timing['wall']['timed'], timing['cpu']['timed']
    median = statistics.median(times)
    return {'step_time_s': median, 'clips_per_s': batch / median, 'step_times_s': times,
            'min_step_time_s': min(times), 'mean_step_time_s': statistics.fmean(times),
            'warmup_step_times_s': timing['wall']['warmup'],
            'cpu_time_per_step_s': statistics.median(cpu), 'cpu_times_per_step_s': cpu}


class PeakRSS:
    """Peak growth of this process's resident memory while the block runs (host memory: the
    whole footprint on CPU). Polls /proc/self/statm; None where there is no /proc."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s, self.base, self.peak = interval_s, None, None

    @staticmethod
    def rss() -> int | None:
        try:
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        import threading
        self.base = self.peak = self.rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(self.interval_s):
                self.peak = max(self.peak, self.rss())
        if self.base is not None:
            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.base is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def increase(self) -> int | None:
        return None if self.base is None else self.peak - self.base
