"""The README's demo command end to end, at reduced size: demo records built through the HOD
pipeline, co-training, held-out retrieval, checkpoints, logs, the report and the PyTorch
export, all as a user would get them; then the same command again, which must resume at the
final step, train nothing and leave the report as it was.

The reduced run must learn: on 8 training clips (one batch) with a short warmup and a higher
learning rate, 30 steps bring the contrastive loss clearly below its chance level ln(batch)
(measured: from ~2.08 to ~1.62 for batch 8; a model that learns nothing stays near 2.05).
Held-out retrieval needs hundreds of steps to leave its chance level, too long for this test."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from egovideo_jax.model.config import VARIANTS
from tests.helpers.torch_reference import RefConfig, RefEgoVideo
from tests.helpers.train_fixtures import REPO, checkpoint_steps, read_metrics, subprocess_env

pytestmark = pytest.mark.e2e

TOTAL_STEPS, BATCH_SIZE, LOG_EVERY, CHECKPOINT_EVERY = 30, 8, 2, 10
COMMAND = ['main.py', '--config=configs/cotrain.py:demo', f'--config.demo.train_clips={BATCH_SIZE}',
           '--config.demo.heldout_clips=12', f'--config.total_steps={TOTAL_STEPS}',
           f'--config.data.batch_size={BATCH_SIZE}', '--config.optim.lr=2e-3',
           '--config.optim.warmup_steps=2', f'--config.log_every={LOG_EVERY}',
           f'--config.checkpoint.every_steps={CHECKPOINT_EVERY}']
LOGGED_STEPS = list(range(LOG_EVERY, TOTAL_STEPS + 1, LOG_EVERY))
# The mean of the last logged losses must be below this fraction of the chance loss ln(batch).
LEARNED_LOSS_FRACTION = 0.85
REPORT_FILES = ('report/README.md', 'report/report.json', 'report/hod_example.png')


def run_demo(workdir) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *COMMAND, f'--workdir={workdir}'], cwd=REPO,
                            env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def demo_reference_model() -> RefEgoVideo:
    """The independent PyTorch reference at the demo variant's sizes."""
    vision, text = VARIANTS['demo'].vision, VARIANTS['demo'].text
    config = RefConfig(image_size=vision.image_size, patch_size=vision.patch_size,
                       vision_width=vision.width, vision_layers=vision.layers,
                       vision_heads=vision.heads, vision_mlp=vision.mlp_dim, num_frames=4,
                       text_width=text.width, text_heads=text.heads, text_layers=text.layers,
                       embed_dim=VARIANTS['demo'].embed_dim)
    return RefEgoVideo(config, 'slowfast')


def assert_png(path):
    with Image.open(path) as image:
        assert image.format == 'PNG'
        image.verify()


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """(workdir, stdout of the first run, stdout of the identical second run, report files'
    bytes after the first run)."""
    workdir = tmp_path_factory.mktemp('demo_run').resolve()  # as the checkpointer prints it
    first = run_demo(workdir)
    report = {name: (workdir / name).read_bytes() for name in REPORT_FILES}
    second = run_demo(workdir)
    return workdir, first.stdout, second.stdout, report


def last_eval(records: list[dict]) -> dict:
    evaluated = [record for record in records if any(k.startswith('eval/') for k in record)]
    assert evaluated, 'no eval record in metrics.jsonl'
    return {k: v for k, v in evaluated[-1].items() if k.startswith('eval/')}


def test_training_checkpoints_logs_and_eval(demo_run):
    workdir, first, _, _ = demo_run
    assert (workdir / 'demo_data' / 'demo_manifest.json').exists()
    assert checkpoint_steps(workdir)[-1] == TOTAL_STEPS
    records = read_metrics(workdir)  # every line is JSON
    assert [r['step'] for r in records if 'train/loss' in r] == LOGGED_STEPS
    evaluated = last_eval(records)
    for direction in ('v2t', 't2v'):
        for metric in ('r1', 'r5', 'map'):
            assert 0.0 <= evaluated[f'eval/demo/all/{direction}_{metric}'] <= 100.0
    saved = json.loads((workdir / 'eval' / 'demo' / 'metrics.json').read_text())
    assert {f'eval/demo/{k}': v for k, v in saved['metrics'].items()} == evaluated
    for png in ('training_curves.png', 'eval/demo/retrievals.png', 'report/hod_example.png'):
        assert_png(workdir / png)
    assert f'report: {workdir / "report" / "README.md"}' in first


def test_training_loss_falls_clearly_below_chance(demo_run):
    losses = [r['train/loss'] for r in read_metrics(demo_run[0]) if 'train/loss' in r]
    chance = math.log(BATCH_SIZE)  # InfoNCE of a model that cannot tell the pairs apart
    assert abs(losses[0] - chance) < 0.5 * chance, losses  # it starts near chance
    assert np.mean(losses[-3:]) < LEARNED_LOSS_FRACTION * chance, losses


def test_report_states_the_logged_facts(demo_run):
    workdir = demo_run[0]
    report = json.loads((workdir / 'report' / 'report.json').read_text())
    assert (report['variant'], report['stage'], report['steps']) == ('demo', 'joint', TOTAL_STEPS)
    assert (report['batch_size'], report['seed'], report['resumed_from_step']) == (BATCH_SIZE, 0, 0)
    assert report['data']['train'] == str(workdir / 'demo_data' / 'train' / 'records')
    assert report['wall_time_s'] > 0
    records = read_metrics(workdir)
    reported = {name: entry['value'] for name, entry in report['metrics'].items()}
    assert {k: v for k, v in reported.items() if k.startswith('eval/')} == last_eval(records)
    last_train = [r for r in records if 'train/loss' in r][-1]
    for name in ('train/loss', 'train/v2t_accuracy', 'train/t2v_accuracy'):
        assert reported[name] == last_train[name]
    files = report['files']
    assert files['retrievals'] == {'demo': 'eval/demo/retrievals.png'}
    assert files['export'] == {'torch': 'export/egovideo_demo.pt',
                               'safetensors': 'export/egovideo_demo.safetensors'}
    readme = (workdir / 'report' / 'README.md').read_text()
    for linked in ('../training_curves.png', '../eval/demo/retrievals.png', 'hod_example.png',
                   '../export/egovideo_demo.pt', '../export/egovideo_demo.safetensors'):
        assert f']({linked})' in readme, linked
    # Each eval metric with its chance level (a random model with the same relevant pairs).
    chance = report['chance']
    assert chance['eval/demo/fast_motion/pair_accuracy'] == 50.0
    assert 0 < chance['eval/demo/all/t2v_r1'] < 100 and 0 < chance['eval/demo/all/t2v_map'] < 100
    assert (f'| `eval/demo/all/t2v_map` | {TOTAL_STEPS} | '
            f'{reported["eval/demo/all/t2v_map"]:.4g} | '
            f'{chance["eval/demo/all/t2v_map"]:.4g} |') in readme
    assert 'chance level' in readme
    assert ('above its chance level' in readme) or ('at or below chance' in readme)


def test_export_loads_strict_into_the_reference_and_holds_the_final_params(demo_run):
    from safetensors.numpy import load_file

    from egovideo_jax import load

    workdir = demo_run[0]
    container = torch.load(workdir / 'export' / 'egovideo_demo.pt', weights_only=True)
    state = {k.removeprefix('module.'): v for k, v in container['state_dict'].items()}
    demo_reference_model().load_state_dict(state, strict=True)
    safetensors = load_file(str(workdir / 'export' / 'egovideo_demo.safetensors'))
    assert sorted(safetensors) == sorted(state)
    final = load(workdir / 'checkpoints' / str(TOTAL_STEPS), variant='demo', mode='slowfast',
                 verbose=False).reference_state()
    for key, value in final.items():
        np.testing.assert_array_equal(state[key].numpy(), value, err_msg=key)
        np.testing.assert_array_equal(safetensors[key], value, err_msg=key)


def test_rerun_resumes_at_the_end_and_keeps_the_report(demo_run):
    workdir, _, second, report = demo_run
    assert f'resumed from {workdir / "checkpoints" / str(TOTAL_STEPS)} at step {TOTAL_STEPS}' \
        in second
    # Nothing is rerun: no training step is logged and no evaluation printed.
    assert f'step {LOG_EVERY}/{TOTAL_STEPS}' not in second
    assert 'demo (demo_retrieval)' not in second
    assert f'report: {workdir / "report" / "README.md"} is up to date' in second
    assert {name: (workdir / name).read_bytes() for name in REPORT_FILES} == report
    assert [r['step'] for r in read_metrics(workdir) if 'train/loss' in r] == LOGGED_STEPS
