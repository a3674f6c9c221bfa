"""Training observability: console lines, TensorBoard events, metrics.jsonl, PNG curves, MFU.

TensorBoard files are written with tensorboardX (no TensorFlow).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Mapping

import jax

from egovideo_jax.train.curves import plot_metrics_file

# Dense bf16 peak FLOP/s per chip (one JAX device), by case-insensitive substrings of
# `device_kind`, first match wins: v6e reports 'TPU v6 lite', v5e 'TPU v5 lite' (so the
# plain 'TPU v5', v5p, comes after it). Unknown kinds (CPUs) get no MFU rather than a made-up
# one. MFU = model FLOPs per step (train/flops.py) / step time / (peak x devices).
PEAK_FLOPS = {
    'TPU v6': 918e12, 'TPU v5p': 459e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
    'TPU v5': 459e12, 'TPU v4': 275e12, 'TPU v3': 123e12, 'H200': 989e12, 'H100': 989e12,
    'A100': 312e12, 'L4': 121e12, 'A10G': 70e12,
}


# HBM per chip in bytes, matched like PEAK_FLOPS. Real accelerators report their limit in
# `memory_stats()`, which wins; compile-only TPU devices (train/memory.py --topology) do not.
HBM_BYTES = {
    'TPU v6': 32 * 2 ** 30, 'TPU v5p': 95 * 2 ** 30, 'TPU v5 lite': 16 * 2 ** 30,
    'TPU v5e': 16 * 2 ** 30, 'TPU v5': 95 * 2 ** 30, 'TPU v4': 32 * 2 ** 30,
    'TPU v3': 16 * 2 ** 30, 'H200': 141 * 10 ** 9, 'H100': 80 * 2 ** 30,
    'A100': 80 * 2 ** 30, 'L4': 24 * 2 ** 30, 'A10G': 24 * 2 ** 30,
}


def _by_device_kind(table: Mapping[str, float], device: jax.Device) -> float | None:
    kind = getattr(device, 'device_kind', '').lower()
    return next((value for name, value in table.items() if name.lower() in kind), None)


def peak_flops(device: jax.Device) -> float | None:
    return _by_device_kind(PEAK_FLOPS, device)


def hbm_bytes(device: jax.Device) -> int | None:
    """The device's memory: its reported limit where it has one, else the chip table."""
    try:
        limit = (device.memory_stats() or {}).get('bytes_limit')
    except Exception:  # compile-only devices and CPUs have no memory stats
        limit = None
    if device.platform == 'cpu':
        return None
    return int(limit) if limit else _by_device_kind(HBM_BYTES, device)


def cost_analysis(compiled) -> dict:
    """XLA's cost analysis of a compiled function ({} where the back-end has none): `flops`
    (per device; a scanned layer stack counted once, Pallas kernels not at all) and, on TPU,
    `optimal_seconds` (the compiler's step-time estimate)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some back-ends do not implement it
        return {}
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return dict(analysis or {})


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled function, from XLA's cost analysis (per device)."""
    flops = cost_analysis(compiled).get('flops')
    return float(flops) if flops and flops > 0 else None


class MetricLogger:
    """One place every metric goes: console, TensorBoard, metrics.jsonl; curves at the end."""

    def __init__(self, workdir: str | Path, total_steps: int, enabled: bool = True):
        self.workdir = Path(workdir)
        self.total_steps = total_steps
        self.enabled = enabled  # only process 0 writes
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.workdir / 'tensorboard'))
            self._jsonl = open(self.workdir / 'metrics.jsonl', 'a')

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = 'train'):
        if not self.enabled:
            return
        record = {'step': step, 'time': time.time()}
        for name, value in metrics.items():
            value = float(value)
            key = f'{prefix}/{name}'
            record[key] = value
            self._writer.add_scalar(key, value, step)
        self._jsonl.write(json.dumps(record) + '\n')
        self._jsonl.flush()

    def console(self, step: int, metrics: Mapping[str, float], eta_seconds: float | None):
        if not self.enabled:
            return
        parts = [f'step {step}/{self.total_steps}']
        formats = {'loss': '{:.4f}', 'v2t_accuracy': '{:.3f}', 't2v_accuracy': '{:.3f}',
                   'lr': '{:.2e}', 'clips_per_s': '{:.1f}', 'step_time_s': '{:.3f}',
                   'mfu': '{:.1%}', 'grad_norm': '{:.3f}'}
        for name, fmt in formats.items():
            if name in metrics and not math.isnan(float(metrics[name])):
                parts.append(f'{name} ' + fmt.format(float(metrics[name])))
        if eta_seconds is not None:
            parts.append(f'eta {time.strftime("%H:%M:%S", time.gmtime(eta_seconds))}')
        print(' | '.join(parts), flush=True)

    def plot_curves(self, path: str | Path | None = None) -> Path | None:
        """`training_curves.png` from metrics.jsonl (train/curves.py), the whole run's."""
        if not self.enabled:
            return None
        self._jsonl.flush()
        return plot_metrics_file(self.workdir / 'metrics.jsonl',
                                 path or self.workdir / 'training_curves.png')

    def close(self):
        if self.enabled:
            self._writer.close()
            self._jsonl.close()
