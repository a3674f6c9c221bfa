"""Fit table: the real train step of each paper-scale config compiled for TPU slices by the
TPU compiler (libtpu, no TPU needed), one row per variant x stage x global batch.

    pip install -r requirements-tpu-aot.txt
    python benchmarks/tpu_fit.py                       # the table in benchmarks/README.md
    python benchmarks/tpu_fit.py --rows b16,joint,2048 --topologies v5e:4x4 --num_slices 2
    # options: --out DIR (one JSON per compile, reused when present: the run resumes),
    #          --timeout S (per compile), --override config.x.y=v (for every row)

Each cell is one `python -m egovideo_jax.train.memory --topology=...` run in a subprocess
(so a compiler crash or an out-of-memory verdict is one cell, not the run). Printed per cell:
GiB per chip (the compiler's memory analysis: arguments + outputs - aliased + temporaries +
code), whether it fits (<= 90% of the chip's HBM), the compiler's step-time estimate
(`optimal_seconds`: it leaves Pallas kernels, i.e. splash attention, out, so it is a lower
bound) and the model-FLOPs MFU that estimate implies. Results: `--out` (default
benchmarks/results/tpu_fit/), `table.md` and `tpu_fit.json` there.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]
from machine_info import machine

from egovideo_jax.io.atomic import write_json_atomically

ROWS = ('b16,stage1,2048', 'b16,stage2,2048', 'b16,joint,2048',
        'l14_336,stage1,512', 'l14_336,stage2,512', 'l14_336,joint,512')
JOINT_ROWS = ('b16,joint,2048', 'l14_336,joint,512')
# The table in benchmarks/README.md: (row, topology, slices) cells. Every row on 32 v5p chips,
# the joint rows (the heaviest stage) on one slice of each other generation as well, and B/16
# joint once over two slices.
DEFAULT_CELLS = ([(row, 'v5p:4x4x2', 1) for row in ROWS]
                 + [(row, topology, 1) for row in JOINT_ROWS
                    for topology in ('v5e:8x8', 'v4:4x4x2', 'v6e:8x8')]
                 + [('b16,joint,2048', 'v5p:2x2x2', 2)])
GIB = 1024 ** 3


def cell_path(out: Path, row: str, topology: str, num_slices: int) -> Path:
    name = f'{row.replace(",", "_")}__{topology.replace(":", "_")}__x{num_slices}.json'
    return out / name


def compile_cell(row: str, topology: str, num_slices: int, overrides: list[str],
                 out: Path, timeout: float) -> dict:
    path = cell_path(out, row, topology, num_slices)
    if path.exists():
        return json.loads(path.read_text())
    variant, stage, batch = row.split(',')
    command = [sys.executable, '-m', 'egovideo_jax.train.memory',
               f'--config=configs/cotrain.py:{variant},{stage}',
               f'--config.data.batch_size={batch}', f'--topology={topology}',
               f'--num_slices={num_slices}', f'--json={path}',
               *[f'--{override}' for override in overrides]]
    started = time.time()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'row': row, 'topology': topology, 'error': f'no result within {timeout} s'}
    if done.returncode or not path.exists():
        return {'row': row, 'topology': topology,
                'error': f'exit {done.returncode}: {done.stderr.strip()[-800:]}'}
    result = json.loads(path.read_text())
    result.update(row=row, wall_seconds=time.time() - started)
    write_json_atomically(path, result)
    return result


def cell_text(result: dict) -> str:
    if result.get('bytes_per_device') is None:
        reason = 'out of HBM' if result.get('fits') is False else result.get('error', '?')
        return f'does not fit ({reason[:60]})'
    total = result['bytes_per_device']['total']
    text = (f"{total / GIB:.1f} GiB ({total / result['hbm_bytes_per_device']:.0%}), "
            f"{'fits' if result['fits'] else 'DOES NOT FIT'}")
    if (result.get('compiler_step_seconds') or 0) > 0:
        text += f", {result['compiler_step_seconds']:.3f} s"
        text += f" ({result['compiler_mfu']:.0%})" if result.get('compiler_mfu') else ''
    return text


def table(cells: list[dict]) -> str:
    """Markdown: one row per variant x stage x batch, one column per slice, from every cell
    compiled so far (a cell never compiled shows '-')."""
    def column(cell):
        slices = cell.get('num_slices', 1)
        return f"{cell['topology']}" + (f' x {slices} slices' if slices > 1 else '')

    chips, rows, columns = {}, [], []
    by_cell = {}
    for cell in cells:
        key = (cell['row'], column(cell))
        by_cell[key] = cell
        if cell.get('num_devices'):
            chips.setdefault(key[1], cell['num_devices'] // cell.get('devices_per_chip', 1))
        rows += [key[0]] if key[0] not in rows else []
        columns += [key[1]] if key[1] not in columns else []
    columns.sort(key=lambda name: (name.split(':')[0], chips.get(name) or 0))
    lines = ['| variant, stage, global batch | ' + ' | '.join(
        f'{name} ({chips[name]} chips)' if chips.get(name) else name for name in columns) + ' |',
             '| --- |' + ' --- |' * len(columns)]
    for row in rows:
        texts = [cell_text(by_cell[(row, name)]) if (row, name) in by_cell else '-'
                 for name in columns]
        lines.append(f'| {row.replace(",", ", ")} | ' + ' | '.join(texts) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', nargs='*', default=None,
                        help='VARIANT,STAGE,GLOBAL_BATCH entries (default: the README table)')
    parser.add_argument('--topologies', nargs='*', default=None)
    parser.add_argument('--num_slices', type=int, default=1)
    parser.add_argument('--override', nargs='*', default=[],
                        help='config overrides for every row, e.g. config.model.remat_policy=dots')
    parser.add_argument('--out', type=Path, default=REPO / 'benchmarks/results/tpu_fit')
    parser.add_argument('--timeout', type=float, default=1800)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rows is None and args.topologies is None:
        cells = DEFAULT_CELLS
    else:
        cells = [(row, topology, args.num_slices) for row in args.rows or ROWS
                 for topology in args.topologies or ('v5p:4x4x2',)]
    for index, (row, topology, slices) in enumerate(cells, 1):
        print(f'[{index}/{len(cells)}] {row} on {topology} x {slices} ...', flush=True)
        result = compile_cell(row, topology, slices, args.override, args.out, args.timeout)
        print('   ', cell_text(result), flush=True)
    every = [json.loads(path.read_text()) for path in sorted(args.out.glob('*__*.json'))]
    text = table([cell for cell in every if 'row' in cell])
    print(text)
    (args.out / 'table.md').write_text(text + '\n')
    write_json_atomically(args.out / 'tpu_fit.json', {
        'machine': machine(('jax', 'jaxlib', 'libtpu')), 'overrides': args.override,
        'cells': every})


if __name__ == '__main__':
    main()
