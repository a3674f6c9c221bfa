"""Fine-tuning runs (configs/finetune.py's `classification` and `mir` tasks) on the tiny
model: preempted by SIGTERM mid-run, each saves and returns, and the same call resumes to the
parameters, optimizer state and logged metrics of an uninterrupted run, bit for bit, then
writes its report; and each prints the counts of the records it trains on.

The runs are chosen so that every random input of a step matters: classification with mixup
and cutmix on (lam, the box and the switch drawn per step) and head dropout; MIR with the
caption drawn by relevancy per clip and epoch, and EgoVLP's adaptive margin (the drawn
caption's relevancy weights the loss). 16 labelled, captioned colour clips, batch 8: an
epoch is 2 steps, so the 2K-step runs reshuffle and redraw twice, and the preemption after
step K = 3 leaves the resumed run mid-epoch.

At startup every run prints the counts of its training records (clips, classes, captions).
"""
import os
import signal

import pytest

from egovideo_jax.train.trainer import train
from tests.helpers.train_fixtures import (
    Recorder,
    assert_trees_bitwise_equal,
    checkpoint_steps,
    compile_cache,
    read_metrics,
    tiny_finetune_config,
    write_labelled_dataset,
)

pytestmark = pytest.mark.slow  # ~60 s: three runs per task; CI runs the slow suite too

K = 3  # preemption step; an uninterrupted run takes 2K steps
TOTAL = 2 * K
CHECKPOINT_EVERY = 2  # K is not a checkpoint step: it is saved because of the signal
TIMING = ('time', 'train/step_time_s', 'train/clips_per_s', 'train/mfu')  # vary run to run

# task -> (configs/finetune.py task, overrides, what its startup line says)
TASKS = {
    'classification': ('demo_cls', {'head.mixup': 0.8, 'head.cutmix': 1.0,
                                    'head.switch_prob': 0.5, 'head.dropout': 0.5},
                       'task: classification: verb_noun_action heads, label smoothing 0.1, '
                       'head dropout 0.5, mixup 0.8, cutmix 1.0'),
    'mir': ('demo_mir', {'loss.adaptive_margin': True},
            'task: mir: max-margin ranking loss, adaptive (EgoVLP) margin 0.2'),
}


@pytest.fixture(scope='module', autouse=True)
def _shared_compilation():
    with compile_cache():
        yield


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """16 colour clips with verb / noun / action labels and relevancy-ranked captions."""
    return write_labelled_dataset(tmp_path_factory.mktemp('labelled_clips'), num_clips=16,
                                  captions=True)


def finetune_config(task, data_dir):
    name, overrides, _ = TASKS[task]
    return tiny_finetune_config(data_dir, name, total_steps=TOTAL,
                                checkpoint_every=CHECKPOINT_EVERY, **overrides)


def sigterm_at(step_to_stop):
    def hook(step, state, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGTERM)
    return hook


def logged(workdir) -> dict[int, dict]:
    """metrics.jsonl by step, less the wall-clock entries; each step logged exactly once."""
    records = read_metrics(workdir)
    steps = [record['step'] for record in records]
    assert steps == sorted(set(steps)), f'steps logged more than once or out of order: {steps}'
    return {record['step']: {key: value for key, value in record.items() if key not in TIMING}
            for record in records}


@pytest.mark.parametrize('task', sorted(TASKS))
def test_finetune_task_resumes_bitwise_after_sigterm(task, data_dir, tmp_path, capsys):
    config = finetune_config(task, data_dir)
    assert config.task == task

    # The uninterrupted reference; it starts by printing what it reads: 16 clips, the
    # fixture's classes (4 verbs x 3 nouns, all 12 pairs occur) and captions (3 per clip,
    # 4 for even clips: 56; 8 distinct texts).
    reference_dir = tmp_path / 'uninterrupted'
    reference = Recorder(capture=[TOTAL])
    train(config, reference_dir, hooks=[reference])
    out = capsys.readouterr().out
    assert (f'train records: 16 clips in {data_dir}; classes: 4 verbs, 3 nouns, 12 actions; '
            'captions: 8 distinct, 56 stored\n') in out
    assert TASKS[task][2] in out
    assert reference.steps == list(range(1, TOTAL + 1))
    expected = logged(reference_dir)
    assert sorted(expected) == list(range(1, TOTAL + 1))

    # Preempted at step K: the step finishes, K is saved, train() returns, no report yet.
    workdir = tmp_path / 'preempted'
    handler_before = signal.getsignal(signal.SIGTERM)
    first = Recorder()
    train(config, workdir, hooks=[first, sigterm_at(K)])
    assert first.steps == list(range(1, K + 1))
    assert checkpoint_steps(workdir) == [CHECKPOINT_EVERY, K]
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert f'SIGTERM: saved {workdir.resolve() / "checkpoints" / str(K)}' in \
        capsys.readouterr().out
    assert not (workdir / 'report').exists()

    # The same call resumes at K + 1 and ends where the uninterrupted run ended.
    second = Recorder(capture=[TOTAL])
    train(config, workdir, hooks=[second])
    assert f'resumed from {workdir.resolve() / "checkpoints" / str(K)} at step {K}' in \
        capsys.readouterr().out
    assert second.steps == list(range(K + 1, TOTAL + 1))
    final, ref_state = second.states[TOTAL], reference.states[TOTAL]
    assert int(final.step) == int(ref_state.step) == TOTAL
    assert_trees_bitwise_equal(final.params, ref_state.params, 'params')
    assert_trees_bitwise_equal(final.opt_state, ref_state.opt_state, 'opt_state')
    # Every step logged once over the restart, every metric equal (exact floats): loss,
    # grad_norm, lr, and the task's own (accuracies for MIR).
    assert logged(workdir) == expected
    assert checkpoint_steps(workdir)[-1] == TOTAL
    assert (workdir / 'report' / 'README.md').is_file()
