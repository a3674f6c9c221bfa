"""End to end: the documented `python -m egovideo_jax.convert` commands, in subprocesses."""
import subprocess
import sys

import numpy as np
import torch

from egovideo_jax import load


def run(*args, check=True):
    result = subprocess.run([sys.executable, '-m', 'egovideo_jax.convert', *args],
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode:
        raise AssertionError(f'exit {result.returncode}\n{result.stdout}\n{result.stderr}')
    return result


def test_torch_to_flax_to_torch_is_lossless(tmp_path):
    first, ckpt, second = tmp_path / 'a.pt', tmp_path / 'ckpt', tmp_path / 'b.safetensors'
    out = run('to-torch', '--variant', 'tiny', '--mode', 'slowfast', '--seed', '3',
              '--out', str(first)).stdout
    assert f'wrote {first}' in out
    report = run('from-torch', '--checkpoint', str(first), '--variant', 'tiny',
                 '--mode', 'slowfast', '--out', str(ckpt)).stdout
    assert '0 new' in report and '0 unexpected' in report
    run('to-torch', '--checkpoint', str(ckpt), '--variant', 'tiny', '--mode', 'slowfast',
        '--out', str(second))
    original = torch.load(first, weights_only=True)['state_dict']
    from safetensors.numpy import load_file
    round_tripped = load_file(str(second))
    assert {k.removeprefix('module.') for k in original} == set(round_tripped)
    for key, tensor in original.items():
        np.testing.assert_array_equal(tensor.numpy(), round_tripped[key.removeprefix('module.')])
    # Our checkpoint directory is also what load() takes.
    model = load(ckpt, variant='tiny', mode='slowfast', verbose=False)
    assert model.report.source_format == 'egovideo-jax' and model.report.new == []


def test_errors_name_the_problem(tmp_path):
    missing = run('from-torch', '--checkpoint', str(tmp_path / 'nope.pt'), '--variant', 'tiny',
                  '--out', str(tmp_path / 'x'), check=False)
    assert missing.returncode != 0 and 'nope.pt' in missing.stderr
    bad_suffix = run('to-torch', '--variant', 'tiny', '--out', str(tmp_path / 'x.npz'),
                     check=False)
    assert bad_suffix.returncode != 0 and '.safetensors' in bad_suffix.stderr
    ckpt = tmp_path / 'ckpt'
    run('to-torch', '--variant', 'tiny', '--mode', 'single', '--out', str(tmp_path / 's.pt'))
    run('from-torch', '--checkpoint', str(tmp_path / 's.pt'), '--variant', 'tiny',
        '--mode', 'single', '--out', str(ckpt))
    wrong_mode = run('to-torch', '--checkpoint', str(ckpt), '--variant', 'tiny',
                     '--mode', 'slowfast', '--out', str(tmp_path / 'y.pt'), check=False)
    assert wrong_mode.returncode != 0 and "mode='single'" in wrong_mode.stderr


def test_load_reads_a_trainer_step_directory(tmp_path):
    """`WORKDIR/checkpoints/STEP` holds the train state under a `state` item."""
    import jax
    import orbax.checkpoint as ocp

    from egovideo_jax.api import EgoVideoModel
    from egovideo_jax.model.config import get_model_config
    from egovideo_jax.model.encoder import init_params

    config = get_model_config('tiny', 'single')
    params = init_params(config, seed=7)
    state = {'step': np.int32(3), 'params': params,
             'opt_state': jax.tree_util.tree_map(np.zeros_like, params)}
    manager = ocp.CheckpointManager(tmp_path / 'checkpoints',
                                    item_handlers={'state': ocp.StandardCheckpointHandler()})
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    model = load(tmp_path / 'checkpoints' / '3', variant='tiny', mode='single', verbose=False)
    assert model.report.new == [] and model.report.unexpected == []
    expected = EgoVideoModel(config, params).reference_state()
    for key, value in model.reference_state().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
