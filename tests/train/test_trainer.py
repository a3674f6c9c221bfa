"""The co-training loop end to end on the tiny model: exact resume after SIGTERM, after a
crash, and through `main.py`; non-finite losses; the files a run leaves; initialisation from
converted weights.

Every run uses `train_fixtures.tiny_config` (tiny slow/fast model, batch 8, 32 px, linear
warmup over 8 steps then a constant lr) on a 32-clip dataset of 4 solid-colour classes. The
runs share one XLA compilation through JAX's persistent compilation cache (see
`train_fixtures.compile_cache`).
"""
import os
import re
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

import egovideo_jax
from egovideo_jax.evaluate import registry
from egovideo_jax.model.layout import unstack_layers
from egovideo_jax.train.flops import model_flops_from_config
from egovideo_jax.train.setup import build_module
from egovideo_jax.train.state import abstract_params
from egovideo_jax.train.tasks import task_of
from egovideo_jax.train.trainer import NonFiniteLoss, initial_params, train
from tests.helpers.params import perturbed
from tests.helpers.train_fixtures import (
    REPO,
    Recorder,
    assert_trees_bitwise_equal,
    checkpoint_steps,
    compile_cache,
    config_flags,
    host_tree,
    losses_by_step,
    read_metrics,
    restore_state,
    subprocess_env,
    tiny_config,
    write_dataset,
)

K = 7  # interruption step; the uninterrupted reference runs 2K steps


@pytest.fixture(scope='module', autouse=True)
def _shared_compilation():
    with compile_cache():
        yield


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp('colour_clips'))


def resume_config(data_dir, checkpoint_every=3):
    return tiny_config(data_dir, total_steps=2 * K, checkpoint_every=checkpoint_every)


@pytest.fixture(scope='module')
def reference(data_dir, tmp_path_factory):
    """The uninterrupted 2K-step run: (workdir, final state, losses by step)."""
    workdir = tmp_path_factory.mktemp('uninterrupted')
    recorder = Recorder(capture=[2 * K])
    train(resume_config(data_dir), workdir, hooks=[recorder])
    assert recorder.steps == list(range(1, 2 * K + 1))
    return workdir, recorder.states[2 * K], losses_by_step(workdir)


def assert_same_as_reference(reference, workdir, final_state):
    ref_workdir, ref_state, ref_losses = reference
    assert_trees_bitwise_equal(final_state.params, ref_state.params, 'params')
    assert_trees_bitwise_equal(final_state.opt_state, ref_state.opt_state, 'opt_state')
    assert int(final_state.step) == int(ref_state.step) == 2 * K
    # Every step logged exactly once (none repeated or lost over the restart), same losses.
    losses = losses_by_step(workdir)
    assert [r['step'] for r in read_metrics(workdir)] == list(range(1, 2 * K + 1))
    assert losses == ref_losses  # exact float equality, steps after the resume included


# ----------------------------------------------------------------------------- exact resume

def test_sigterm_finishes_the_step_saves_returns_and_resumes_bitwise(reference, data_dir,
                                                                     tmp_path, capsys):
    config = resume_config(data_dir)  # checkpoints every 3 steps; K=7 is not one of them
    workdir = tmp_path / 'preempted'
    handler_before = signal.getsignal(signal.SIGTERM)

    def preempt(step, state, metrics):
        if step == K:
            os.kill(os.getpid(), signal.SIGTERM)

    first = Recorder()
    train(config, workdir, hooks=[first, preempt])  # returns normally
    assert first.steps == list(range(1, K + 1))  # step K finished, nothing after it
    assert checkpoint_steps(workdir) == [3, 6, K]  # K saved because of the signal
    assert sorted(losses_by_step(workdir)) == list(range(1, K + 1))
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handler restored
    out = capsys.readouterr().out
    assert f'SIGTERM: saved {workdir.resolve() / "checkpoints" / str(K)}' in out

    second = Recorder(capture=[2 * K])
    train(config, workdir, hooks=[second])
    assert f'resumed from {workdir.resolve() / "checkpoints" / str(K)} at step {K}' in \
        capsys.readouterr().out
    assert second.steps == list(range(K + 1, 2 * K + 1))
    assert_same_as_reference(reference, workdir, second.states[2 * K])
    # The final checkpoint on disk holds the same state.
    assert checkpoint_steps(workdir)[-1] == checkpoint_steps(reference[0])[-1] == 2 * K
    saved = restore_state(config, workdir)
    assert_trees_bitwise_equal(saved.params, reference[1].params, 'checkpointed params')
    assert_trees_bitwise_equal(saved.opt_state, reference[1].opt_state, 'checkpointed opt_state')


def test_crash_after_a_checkpoint_resumes_from_it_bitwise(reference, data_dir, tmp_path,
                                                          capsys):
    config = resume_config(data_dir, checkpoint_every=K)
    workdir = tmp_path / 'crashed'
    handler_before = signal.getsignal(signal.SIGTERM)

    def crash(step, state, metrics):
        if step == K + 1:
            raise RuntimeError('simulated crash')

    with pytest.raises(RuntimeError, match='simulated crash'):
        train(config, workdir, hooks=[crash])
    assert checkpoint_steps(workdir) == [K]  # step K+1 was computed but never saved
    assert signal.getsignal(signal.SIGTERM) is handler_before

    capsys.readouterr()
    resumed = Recorder(capture=[2 * K])
    train(config, workdir, hooks=[resumed])
    assert f'at step {K}' in capsys.readouterr().out
    assert resumed.steps == list(range(K + 1, 2 * K + 1))  # K+1 is redone from the checkpoint
    assert_same_as_reference(reference, workdir, resumed.states[2 * K])


# ----------------------------------------------------------------------------- non-finite

def poison_logit_scale_at(poison_step):
    """Hook: after `poison_step`, the logit scale becomes NaN, so the next loss is NaN.
    (The state's params are a plain dict, so the hook can swap a leaf before the next step.)"""
    def hook(step, state, metrics):
        if step == poison_step:
            scale = state.params['logit_scale']
            state.params['logit_scale'] = jax.device_put(
                jnp.full(scale.shape, jnp.nan, scale.dtype), scale.sharding)
    return hook


def test_nan_loss_stops_naming_step_batch_and_last_good_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / 'nan'
    config = tiny_config(data_dir, total_steps=8, checkpoint_every=3)
    with pytest.raises(NonFiniteLoss) as error:
        train(config, workdir, hooks=[poison_logit_scale_at(4)])
    message = str(error.value)
    assert 'loss is nan' in message and 'at step 5 ' in message
    assert 'batch 4' in message
    assert f'last good checkpoint: {workdir.resolve() / "checkpoints" / "3"}' in message
    assert checkpoint_steps(workdir) == [3]
    # The bad step is neither logged nor saved.
    assert sorted(losses_by_step(workdir)) == [1, 2, 3, 4]
    assert all(np.isfinite(loss) for loss in losses_by_step(workdir).values())


def test_nan_loss_before_any_checkpoint_says_none_saved_yet(data_dir, tmp_path):
    workdir = tmp_path / 'nan_early'
    config = tiny_config(data_dir, total_steps=8, checkpoint_every=3)
    with pytest.raises(NonFiniteLoss, match=r'at step 2 .*batch 1.*none saved yet'):
        train(config, workdir, hooks=[poison_logit_scale_at(1)])
    assert checkpoint_steps(workdir) == []


# ----------------------------------------------------------------------------- outputs

def test_run_writes_metrics_tensorboard_curves_and_keeps_the_last_checkpoints(data_dir,
                                                                              tmp_path):
    workdir = tmp_path / 'outputs'
    config = tiny_config(data_dir, total_steps=30, checkpoint_every=5,
                         **{'checkpoint.keep': 2})
    last = train(config, workdir)

    records = read_metrics(workdir)  # every line parses
    assert [r['step'] for r in records] == list(range(1, 31))
    for record in records:
        for key in ('train/loss', 'train/lr', 'train/clips_per_s', 'train/step_time_s',
                    'train/v2t_accuracy', 'train/t2v_accuracy', 'train/grad_norm'):
            assert np.isfinite(record[key]), (record['step'], key)
        assert record['train/clips_per_s'] > 0 and record['train/step_time_s'] > 0
        # The analytic model FLOPs are logged on CPU too; MFU only where a peak is known.
        assert record['train/model_flops_per_step'] == model_flops_from_config(config).total
        assert 'train/mfu' not in record
    assert records[0]['train/lr'] == 0.0  # warmup starts at 0
    assert records[-1]['train/lr'] == pytest.approx(config.optim.lr)
    assert last['loss'] == records[-1]['train/loss']

    events = list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
    assert events and b'train/loss' in events[0].read_bytes()
    curves = workdir / 'training_curves.png'
    assert curves.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(curves) as image:
        image.verify()

    assert checkpoint_steps(workdir) == [25, 30]  # keep=2 of 5, 10, ..., 30
    for step in (25, 30):
        items = {entry.name for entry in (workdir / 'checkpoints' / str(step)).iterdir()}
        assert {'state', 'data_iter', 'config'} <= items

    # Text and video are learnable (the narration names the frames' colour): the loss falls.
    losses = [r['train/loss'] for r in records]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


class ScriptedScoreEvaluator(registry.Evaluator):
    """Returns the next of SCORES at each call, and checks it gets the trainer's module."""
    type = 'scripted_score'
    SCORES = [1.0, 5.0, 2.0, 3.0]
    calls = []

    def read_annotations(self):
        return None

    def evaluate(self, model, annotations):
        ScriptedScoreEvaluator.calls.append(model.module)
        return {'score': self.SCORES[len(ScriptedScoreEvaluator.calls) - 1]}


def test_keep_best_keeps_the_best_evaluated_checkpoint(data_dir, tmp_path):
    if 'scripted_score' not in registry.EVALUATORS:
        registry.register('scripted_score')(ScriptedScoreEvaluator)
    ScriptedScoreEvaluator.calls.clear()
    config = tiny_config(data_dir, total_steps=12, checkpoint_every=3,
                         **{'checkpoint.keep': 1, 'checkpoint.keep_best': 1,
                            'checkpoint.best_metric': 'eval/scored/score'})
    with config.unlocked():
        config.evals.scored = ml_collections.ConfigDict(
            dict(type='scripted_score', every_steps=3))
    train(config, tmp_path / 'best')
    # Evaluated at steps 3, 6, 9, 12 with scores 1, 5, 2, 3: the best (6) and the last stay.
    assert checkpoint_steps(tmp_path / 'best') == [6, 12]
    # The evaluator ran the trainer's own module (its attention, scan and dtype settings).
    assert all(module == build_module(config) for module in ScriptedScoreEvaluator.calls)


# ----------------------------------------------------------------------------- init weights

@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny slow/fast model with non-default weights, exported as a reference .pt."""
    model = egovideo_jax.load(variant='tiny', mode='slowfast', verbose=False)
    model.params = perturbed(model.params, seed=3)  # unlike any seed's initialisation
    path = tmp_path_factory.mktemp('exported') / 'tiny.pt'
    model.export_torch(path)
    return path, host_tree(model.params)


def test_training_starts_from_converted_weights(exported, data_dir, tmp_path, capsys):
    path, exported_params = exported
    config = tiny_config(data_dir, total_steps=1, **{'init.checkpoint': str(path)})
    params = initial_params(config, task_of(config), verbose=True)
    report = capsys.readouterr().out
    assert re.search(rf'{re.escape(str(path))}: reference checkpoint: \d+ loaded, 0 new ', report)
    assert_trees_bitwise_equal(host_tree(params), exported_params, 'initial_params')

    # Through the whole trainer: step 1 runs at lr 0 (warmup starts at 0), so the state
    # after it holds exactly the initial parameters.
    recorder = Recorder(capture=[1])
    train(config, tmp_path / 'init', hooks=[recorder])
    assert read_metrics(tmp_path / 'init')[0]['train/lr'] == 0.0
    assert_trees_bitwise_equal(recorder.states[1].params, exported_params, 'trainer params')


def test_converted_weights_are_stacked_for_scan_layers(exported, data_dir):
    path, exported_params = exported
    config = tiny_config(data_dir, **{'init.checkpoint': str(path), 'model.scan_layers': True})
    params = host_tree(initial_params(config, task_of(config), verbose=False))
    for tower in ('visual', 'textual'):
        assert 'blocks' in params[tower] and 'blocks_0' not in params[tower]
        assert params[tower]['blocks']['ln_1']['scale'].shape[0] == 2  # [layers, ...]
    # The layout the scanned model expects, holding the exported values layer by layer.
    module = build_module(config)
    expected = nn.unbox(abstract_params(module, module.config))
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)), tree)
    assert shapes(params) == shapes(expected)
    assert_trees_bitwise_equal(unstack_layers(params), exported_params, 'unstacked')


# ----------------------------------------------------------------------------- main.py

def test_main_py_exits_cleanly_on_sigterm_and_the_same_command_resumes(data_dir, tmp_path):
    """The documented command, preempted by SIGTERM once its first checkpoint exists.

    Timing: 60 tiny steps with a checkpoint every 15 leave ~45 steps (seconds) between the
    first checkpoint appearing and the end of the run, so the signal normally lands mid-run.
    Should the run get to its end first anyway (a very fast or a very loaded machine), the
    test does not fail on timing: if it exited before the signal, it must have exited 0; if
    the signal hit the teardown after the last save (the handler is restored by then, so
    the process dies of SIGTERM), the run must be complete. Either way the rerun must then
    resume at the final step and do nothing."""
    total = 60
    config = tiny_config(data_dir, total_steps=total, checkpoint_every=15)
    workdir = (tmp_path / 'main_run').resolve()
    command = [sys.executable, 'main.py', *config_flags(config), f'--workdir={workdir}']

    def start(log):
        return subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=log,
                                stderr=subprocess.STDOUT, text=True)

    with open(tmp_path / 'first.log', 'w') as log:
        process = start(log)
        deadline = time.time() + 240
        while not checkpoint_steps(workdir) and process.poll() is None:
            assert time.time() < deadline, 'no checkpoint appeared'
            time.sleep(0.05)
        signalled = process.poll() is None
        if signalled:
            process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=240)
    first_log = (tmp_path / 'first.log').read_text()
    interrupted_at = checkpoint_steps(workdir)[-1]
    finished = interrupted_at == total and 'SIGTERM: saved' not in first_log
    if not (finished and returncode == -signal.SIGTERM):  # signal after the end: see above
        assert returncode == 0, first_log
    if signalled and not finished:
        assert f'SIGTERM: saved {workdir / "checkpoints" / str(interrupted_at)}' in first_log

    second = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f'resumed from {workdir / "checkpoints" / str(interrupted_at)} at step ' \
           f'{interrupted_at}' in second.stdout
    assert checkpoint_steps(workdir)[-1] == total
    assert [r['step'] for r in read_metrics(workdir)] == list(range(1, total + 1))
