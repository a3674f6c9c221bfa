"""The end-of-run report: what a finished co-training run produced, in one place.

Written by process 0 when a run reaches `total_steps` (`write_report`, called by the trainer):

    WORKDIR/report/README.md        run summary, final metrics, the figures embedded
    WORKDIR/report/report.json      the same facts (paths relative to WORKDIR)
    WORKDIR/report/hod_example.png  a training record with its boxes, tracks and narrations
    WORKDIR/export/egovideo_<variant>.pt / .safetensors
                                    the final parameters in the reference PyTorch layout

Metric values are read back from `WORKDIR/metrics.jsonl` (the last value of every metric), so
the report says exactly what the log says. report.json is written last and atomically: a
report whose report.json names the final step is complete, and a rerun of a finished run
(which trains nothing) leaves it alone.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax

from egovideo_jax.convert import torch_io, weights
from egovideo_jax.io.atomic import write_json_atomically
from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.records.dataset import open_dataset

REPORT_DIR, EXPORT_DIR = 'report', 'export'
TRAIN_METRICS = ('loss', 'v2t_accuracy', 't2v_accuracy', 'clips_per_s')
EXPORT_SUFFIXES = {'torch': '.pt', 'safetensors': '.safetensors'}


def is_current(workdir: Path, step: int) -> bool:
    """True when `workdir` already holds the complete report of step `step`."""
    path = workdir / REPORT_DIR / 'report.json'
    return path.exists() and json.loads(path.read_text(encoding='utf-8')).get('steps') == step


def final_metrics(workdir: Path) -> dict[str, dict[str, float]]:
    """`{name: {'step', 'value'}}`: the last logged value of every train metric in
    TRAIN_METRICS and of every eval metric, from metrics.jsonl."""
    final = {}
    path = workdir / 'metrics.jsonl'
    if not path.exists():
        return final
    with open(path, encoding='utf-8') as file:
        for record in map(json.loads, file):
            for name, value in record.items():
                if name.startswith('eval/') or (name.startswith('train/')
                                                and name.removeprefix('train/') in TRAIN_METRICS):
                    final[name] = {'step': record['step'], 'value': value}
    return final


def chance_levels(workdir: Path, eval_names) -> dict[str, float]:
    """`{'eval/NAME/metric': chance}` from each evaluator's metrics.json (its `chance`)."""
    chance = {}
    for name in eval_names:
        path = workdir / 'eval' / name / 'metrics.json'
        if path.exists():
            saved = json.loads(path.read_text(encoding='utf-8')).get('chance') or {}
            chance.update({f'eval/{name}/{metric}': value for metric, value in saved.items()})
    return chance


def what_it_shows(metrics: dict[str, dict[str, float]], chance: dict[str, float]) -> str:
    """One sentence comparing the final eval metrics with their chance levels."""
    compared = [(name, metrics[name]['value'], level) for name, level in chance.items()
                if name in metrics]
    if not compared:
        return 'No evaluator reported chance levels, so the eval metrics stand alone.'
    below = [name for name, value, level in compared if value <= level]
    ratios = sorted((value / level, name) for name, value, level in compared if level > 0)
    if not below:
        low, lowest = ratios[0]
        return (f'Every eval metric is above its chance level (the closest, `{lowest}`, at '
                f'{low:.1f}x chance): the model learned what these evaluations measure.')
    return (f'{len(below)} of {len(compared)} eval metrics are at or below chance ('
            + ', '.join(f'`{name}`' for name in below[:4])
            + ('...' if len(below) > 4 else '') + '): the model has not learned that yet.')


def host_readable(params) -> bool:
    """True when this process holds every parameter whole: a single-process run, or
    parameters replicated over the processes. Fetching anything else would need a
    collective every process joins, which a lead-only step cannot do."""
    return all(not isinstance(leaf, jax.Array) or leaf.is_fully_addressable
               or leaf.is_fully_replicated for leaf in jax.tree_util.tree_leaves(params))


def export_weights(params, model_config: EgoVideoConfig, directory: Path, stem: str,
                   formats: list[str], task=None) -> dict[str, Path]:
    """The parameters (either layer layout) in the reference key layout, one file per
    format ('torch': the reference `.pt` container, 'safetensors'); with a fine-tuning
    `task` (train/tasks.py), its `reference_state` (e.g. the backbone plus `head.*` keys)."""
    state = (task.reference_state(params, model_config) if task is not None
             else weights.to_reference_state(params, model_config))
    written = {}
    for name in formats:
        path = directory / f'{stem}{EXPORT_SUFFIXES[name]}'
        if name == 'torch':
            torch_io.write_torch(path, state)
        else:
            torch_io.write_safetensors(path, state)
        written[name] = path
    return written


def converter_command(config, checkpoint: Path, out: Path) -> str:
    return (f'python -m egovideo_jax.convert to-torch --checkpoint {checkpoint} '
            f'--variant {config.model.variant} --mode {config.model.mode} '
            f'--num-frames {config.model.num_frames} --out {out}')


def write_hod_example(records: str, path: Path) -> Path:
    """The first training record drawn by the HOD visual check (hod/visualize.py)."""
    from egovideo_jax.hod.visualize import clip_strip
    clip_strip(open_dataset(records).decode(0)).save(path, optimize=True)
    return path


def eval_inputs(config) -> dict[str, dict[str, str]]:
    """Per evaluator: its type and the file or folder settings it read."""
    return {name: {'type': section.type,
                   **{field: value for field, value in section.items()
                      if isinstance(value, str) and value and os.path.exists(value)}}
            for name, section in config.evals.items()}


def relative(path: Path, workdir: Path) -> str:
    return os.path.relpath(path, workdir)


def write_exports(config, workdir: Path, params, model_config: EgoVideoConfig,
                  step: int, task=None) -> tuple[dict[str, str], str]:
    """The formats `config.report` asks for: `({format: path}, '')`, or `({}, why not)`."""
    formats = [name for name in EXPORT_SUFFIXES if config.report[f'export_{name}']]
    stem = f'egovideo_{config.variant}'
    if not formats:
        return {}, ''
    if not host_readable(params):
        command = converter_command(config, workdir / 'checkpoints' / str(step),
                                    workdir / EXPORT_DIR / f'{stem}.pt')
        return {}, (f'skipped: the parameters are sharded over {jax.process_count()} '
                    f'processes; convert the final checkpoint with `{command}`')
    written = export_weights(params, model_config, workdir / EXPORT_DIR, stem, formats, task)
    return {name: relative(path, workdir) for name, path in written.items()}, ''


def run_facts(config, model_config: EgoVideoConfig, *, step: int, start_step: int,
              started: float, task=None) -> dict[str, Any]:
    return {
        'variant': config.variant, 'stage': config.stage,
        'task': task.describe() if task is not None else 'contrastive',
        'model': {'variant': model_config.variant, 'mode': model_config.mode,
                  'num_frames': config.model.num_frames,
                  'fast_frames': config.model.fast_frames, 'dtype': config.model.dtype},
        'steps': step, 'resumed_from_step': start_step,
        'batch_size': config.data.batch_size, 'seed': config.seed,
        'data': {'train': config.data.train, 'evals': eval_inputs(config)},
        'devices': {'count': jax.device_count(), 'kind': jax.devices()[0].device_kind,
                    'processes': jax.process_count()},
        'wall_time_s': time.time() - started,
        'checkpoint': f'checkpoints/{step}',
    }


def write_report(config, workdir: str | os.PathLike, params, model_config: EgoVideoConfig, *,
                 step: int, start_step: int, started: float, task=None) -> Path | None:
    """The report of a run that finished at `step` (see the module docstring); `started`:
    when this invocation began (time.time()). Returns the path of its README.md, or None
    when this invocation trained nothing and the workdir already holds the report."""
    workdir = Path(workdir)
    report_dir = workdir / REPORT_DIR
    if start_step == step and is_current(workdir, step):
        print(f'report: {report_dir / "README.md"} is up to date (step {step})')
        return None
    report_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    if (workdir / 'training_curves.png').exists():
        files['training_curves'] = 'training_curves.png'
    files['retrievals'] = {name: relative(path, workdir) for name in config.evals
                           if (path := workdir / 'eval' / name / 'retrievals.png').exists()}
    if config.report.hod_example:
        files['hod_example'] = relative(
            write_hod_example(config.data.train, report_dir / 'hod_example.png'), workdir)
    files['export'], export_note = write_exports(config, workdir, params, model_config, step,
                                                 task)
    facts = {**run_facts(config, model_config, step=step, start_step=start_step,
                         started=started, task=task),
             'metrics': final_metrics(workdir), 'chance': chance_levels(workdir, config.evals),
             'files': files, 'export_note': export_note}
    readme = report_dir / 'README.md'
    readme.write_text(markdown(facts), encoding='utf-8')
    write_json_atomically(report_dir / 'report.json', facts)
    print(f'report: {readme}')
    return readme


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f'{hours} h ' if hours else '') + (f'{minutes} min ' if minutes else '') + \
        f'{seconds} s'


def _link(path: str) -> str:
    """A report.json path (relative to the workdir) as README.md, in REPORT_DIR, links it."""
    return os.path.relpath(path, REPORT_DIR)


def markdown(facts: dict[str, Any]) -> str:
    model, files, chance = facts['model'], facts['files'], facts.get('chance', {})
    resumed = (f' (this invocation resumed at step {facts["resumed_from_step"]})'
               if facts['resumed_from_step'] else '')
    rows = [
        ('variant', f'`{facts["variant"]}`: model {model["variant"]}, {model["mode"]}, '
                    f'{model["num_frames"]} + {model["fast_frames"]} frames, {model["dtype"]}'),
        ('stage', facts['stage']),
        ('task', facts.get('task', 'contrastive')),
        ('steps', f'{facts["steps"]}{resumed}'),
        ('global batch', facts['batch_size']),
        ('seed', facts['seed']),
        ('train records', f'`{facts["data"]["train"]}`'),
        *((f'eval `{name}` ({inputs["type"]})',
           ', '.join(f'{field} `{value}`' for field, value in inputs.items() if field != 'type')
           or '-')
          for name, inputs in facts['data']['evals'].items()),
        ('devices', f'{facts["devices"]["count"]} x {facts["devices"]["kind"]} '
                    f'({facts["devices"]["processes"]} process(es))'),
        ('wall time', f'{_duration(facts["wall_time_s"])} (this invocation)'),
        ('final checkpoint', f'`{facts["checkpoint"]}`'),
    ]
    kind = 'Co-training' if facts.get('task', 'contrastive') == 'contrastive' else 'Fine-tuning'
    lines = [f'# {kind} run: {facts["variant"]}, {facts["stage"]}', '',
             '| | |', '| --- | --- |', *(f'| {key} | {value} |' for key, value in rows), '',
             '## Final metrics', '',
             'Train metrics are the last logged step\'s; eval metrics are percentages, with '
             'the chance level beside them (a model without information: random '
             'similarities with the same relevant pairs, averaged over draws; 50 for a '
             'two-way choice).', '',
             what_it_shows(facts['metrics'], chance), '',
             '| metric | step | value | chance |', '| --- | ---: | ---: | ---: |',
             *(f'| `{name}` | {entry["step"]} | {entry["value"]:.4g} | '
               + (f'{chance[name]:.4g} |' if name in chance else '- |')
               for name, entry in facts['metrics'].items()), '']
    if 'training_curves' in files:
        lines += ['## Training curves', '',
                  f'![training curves]({_link(files["training_curves"])})', '']
    for name, path in files['retrievals'].items():
        lines += [f'## Retrieval examples: `{name}`', '',
                  'Text queries with their top-5 held-out clips (green: the query\'s own '
                  'clips; red: others).', '', f'![{name} retrievals]({_link(path)})', '']
    if 'hod_example' in files:
        lines += ['## HOD example', '',
                  'The first training record: hand and object boxes (solid detected, dashed '
                  'interpolated), their tracks, the HOD and original narrations.', '',
                  f'![HOD example]({_link(files["hod_example"])})', '']
    if files['export']:
        lines += ['## PyTorch export', '',
                  *(f'- [`{path}`]({_link(path)})' for path in files['export'].values()), '',
                  'The reference key layout: the `.pt` holds `{"epoch", "state_dict": '
                  '{"module." + key: tensor}}` and loads into the reference model with '
                  '`load_state_dict(strict=True)`; the `.safetensors` holds the same tensors '
                  'without the `module.` prefix.', '']
    elif facts['export_note']:
        lines += ['## PyTorch export', '', facts['export_note'], '']
    return '\n'.join(lines)
