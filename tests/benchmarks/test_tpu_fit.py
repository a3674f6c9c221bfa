"""`benchmarks/tpu_fit.py`: the table from compiled cells, and cached cells reused (each real
compile is the TPU compile test's business: tests/train/test_memory_tpu.py)."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIB = 2 ** 30


def load_script():
    spec = importlib.util.spec_from_file_location('tpu_fit', REPO / 'benchmarks' / 'tpu_fit.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell(row, topology, total_gib, fits, devices=32, per_chip=1, seconds=None, slices=1):
    return {'row': row, 'topology': topology, 'num_slices': slices, 'num_devices': devices,
            'devices_per_chip': per_chip, 'hbm_bytes_per_device': 32 * GIB, 'fits': fits,
            'bytes_per_device': {'total': int(total_gib * GIB)}, 'compiler_step_seconds': seconds}


def test_table_rows_columns_and_cells():
    fit = load_script()
    text = fit.table([
        cell('b16,joint,2048', 'v5p:4x4x2', 16.0, True, seconds=0.05),
        cell('b16,joint,2048', 'v4:4x4x2', 12.0, True, devices=64, per_chip=2, seconds=-4.0),
        cell('l14_336,joint,512', 'v5p:4x4x2', 30.0, False),
        {'row': 'l14_336,joint,512', 'topology': 'v4:4x4x2', 'num_slices': 1, 'fits': False,
         'bytes_per_device': None, 'error': 'RESOURCE_EXHAUSTED: ...'},
    ]).splitlines()
    assert text[0] == ('| variant, stage, global batch | v4:4x4x2 (32 chips) | '
                       'v5p:4x4x2 (32 chips) |')
    assert text[2] == ('| b16, joint, 2048 | 12.0 GiB (38%), fits | '
                       '16.0 GiB (50%), fits, 0.050 s |')  # no estimate from a negative one
    assert text[3] == ('| l14_336, joint, 512 | does not fit (out of HBM) | '
                       '30.0 GiB (94%), DOES NOT FIT |')


def test_cached_cells_are_reused(tmp_path):
    fit = load_script()
    saved = cell('b16,joint,2048', 'v5p:4x4x2', 16.0, True)
    fit.cell_path(tmp_path, 'b16,joint,2048', 'v5p:4x4x2', 1).write_text(json.dumps(saved))
    assert fit.compile_cell('b16,joint,2048', 'v5p:4x4x2', 1, [], tmp_path, 1) == saved
    assert [entry[1] for entry in fit.DEFAULT_CELLS].count('v5p:4x4x2') == len(fit.ROWS)
