"""The README's fine-tuning demo commands end to end at reduced size
(`main.py --config=configs/finetune.py:demo_cls` and `:demo_mir`): labelled demo records
built through the HOD pipeline, fine-tuning with the classification heads / the max-margin
loss, the held-out evaluators, the report and the export with the heads.

The reduced runs must learn: one batch of 8 training clips seen 30 times. Measured: the
summed verb + noun + action cross-entropy falls from ~7.5 to ~3; the max-margin loss from
~0.2 to ~0.05 (a model that learns nothing stays near its start)."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers.train_fixtures import REPO, read_metrics, subprocess_env

pytestmark = pytest.mark.e2e

TOTAL_STEPS, BATCH_SIZE, LOG_EVERY = 30, 8, 2
LEARNED_FRACTION = 0.7  # mean of the last three logged losses / the first logged loss


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('finetune_demo_data')


def run_finetune(task: str, workdir, demo_dir) -> subprocess.CompletedProcess:
    command = [sys.executable, 'main.py', f'--config=configs/finetune.py:{task}',
               f'--workdir={workdir}', f'--config.demo.dir={demo_dir}',
               f'--config.demo.train_clips={BATCH_SIZE}', '--config.demo.heldout_clips=12',
               f'--config.total_steps={TOTAL_STEPS}', f'--config.data.batch_size={BATCH_SIZE}',
               '--config.optim.lr=2e-3', '--config.optim.warmup_steps=2',
               f'--config.log_every={LOG_EVERY}', f'--config.checkpoint.every_steps={TOTAL_STEPS}',
               f'--config.evals.{task}.every_steps={TOTAL_STEPS}']
    if task == 'demo_cls':
        command.append('--config.head.dropout=0.0')
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def losses(workdir) -> list[float]:
    return [record['train/loss'] for record in read_metrics(workdir) if 'train/loss' in record]


def final_eval(workdir, name: str) -> dict[str, float]:
    records = [record for record in read_metrics(workdir) if any(k.startswith('eval/')
                                                                  for k in record)]
    assert records, 'no evaluation was logged'
    prefix = f'eval/{name}/'
    return {key[len(prefix):]: value for key, value in records[-1].items()
            if key.startswith(prefix)}


def test_demo_cls_learns_evaluates_and_exports_the_heads(tmp_path, demo_dir):
    result = run_finetune('demo_cls', tmp_path, demo_dir)
    # The counts of the labelled training split: all 11 demo actions as verbs, the 2
    # objects as nouns, the (verb, noun) pairs that occur as actions.
    assert re.search(rf'^train records: {BATCH_SIZE} clips in \S+train_labelled; classes: '
                     r'11 verbs, 2 nouns, \d+ actions$', result.stdout, re.MULTILINE), \
        result.stdout[:3000]
    assert 'task: classification: verb_noun_action heads' in result.stdout
    curve = losses(tmp_path)
    assert len(curve) == TOTAL_STEPS // LOG_EVERY
    assert np.mean(curve[-3:]) < LEARNED_FRACTION * curve[0], curve
    metrics = final_eval(tmp_path, 'demo_cls')
    for head in ('verb', 'noun', 'action'):
        assert 0 <= metrics[f'{head}_top1'] <= 100
        assert f'{head}_mean_class_acc' in metrics
    state = torch.load(tmp_path / 'export' / 'egovideo_demo.pt', weights_only=True)['state_dict']
    classes = {'verb': 11, 'noun': 2}
    for head, count in classes.items():
        assert state[f'module.head.{head}.weight'].shape[0] == count
        assert state[f'module.head.{head}.bias'].shape == (count,)
    assert any(key.startswith('module.visual.') for key in state)
    assert any(key.startswith('module.transformer.') or key.startswith('module.textual')
               or 'token_embedding' in key for key in state)  # the whole EgoVideo
    report = (tmp_path / 'report' / 'README.md').read_text()
    assert 'Fine-tuning run' in report


def test_demo_mir_learns_and_reports_map_and_ndcg(tmp_path, demo_dir):
    result = run_finetune('demo_mir', tmp_path, demo_dir)
    assert re.search(rf'^train records: {BATCH_SIZE} clips in \S+train_captioned; classes: '
                     r'11 verbs, 2 nouns, \d+ actions; captions: \d+ distinct, \d+ stored$',
                     result.stdout, re.MULTILINE), result.stdout[:3000]
    assert 'task: mir: max-margin ranking loss' in result.stdout
    curve = losses(tmp_path)
    assert np.mean(curve[-3:]) < LEARNED_FRACTION * curve[0], curve
    metrics = final_eval(tmp_path, 'demo_mir')
    for name in ('map_v2t', 'map_t2v', 'map_mean', 'ndcg_v2t', 'ndcg_t2v', 'ndcg_mean'):
        assert 0 < metrics[name] <= 100, name
