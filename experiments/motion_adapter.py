"""Motion-adapter evidence on the embedded demo benchmark.

    python experiments/motion_adapter.py --workdir=/tmp/motion_adapter            # the table
    python experiments/motion_adapter.py --workdir=/tmp/ma --steps=4 --train-clips=24 \\
        --heldout-clips=12 --batch-size=4                                          # smoke run

Trains four models with the same data, budget (steps, batch, learning-rate schedule) and
seeds, each with `python main.py --config=configs/cotrain.py:demo...` in its own process:

  single_4f          one branch, 4 frames (stage1: the whole model trains)
  single_16f         one branch, 16 frames (stage1)
  slowfast_trained   slow 4 + fast 16 frames, joint co-training: the slow branch trains the
                     backbone, the fast branch trains its motion adapters through it (ours)
  slowfast_identity  the same, with the adapters frozen at their identity initialisation (what
                     the reference code trains: its fast branch runs under no_grad)

and evaluates each final checkpoint on the held-out demo split with narration queries:
text->video (and video->text) R@1 and mAP over all clips and over the fast-motion-only actions
(shake vs hold, quick back-and-forth vs a slow move and back: 4 evaluation frames show the
same thing, 16 do not), and the fast-motion pair accuracy (own narration vs the partner
action's; 50 = chance). The demo data is built once under WORKDIR/demo_data. Finished runs
are not repeated (a re-run re-reads their evaluation; an interrupted one resumes from its
checkpoint). Writes WORKDIR/results.json
and WORKDIR/results.md (the README table) and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = 'visual/blocks[^/]*/adapter/.*'


@dataclasses.dataclass(frozen=True)
class Condition:
    config: str  # configs/cotrain.py argument
    mode: str
    eval_frames: int  # single-branch models: frames per held-out clip (slow/fast: 4 + 16)
    overrides: tuple[str, ...] = ()


CONDITIONS = {
    'single_4f': Condition('demo,stage1', 'single', 4, ('--config.model.num_frames=4',)),
    'single_16f': Condition('demo,stage1', 'single', 16, ('--config.model.num_frames=16',)),
    'slowfast_trained': Condition('demo', 'slowfast', 16),
    'slowfast_identity': Condition('demo', 'slowfast', 16, (
        f'--config.optim.frozen=("logit_scale", "{ADAPTERS}")',)),
}
COLUMNS = {'all/t2v_r1': 'T->V R@1', 'all/t2v_map': 'T->V mAP',
           'fast_motion/t2v_r1': 'fast-motion T->V R@1',
           'fast_motion/t2v_map': 'fast-motion T->V mAP',
           'fast_motion/pair_accuracy': 'fast-motion pair accuracy'}
REPORTED = (*COLUMNS, 'all/v2t_r1', 'all/v2t_map', 'fast_motion/v2t_r1', 'fast_motion/v2t_map')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--conditions', nargs='+', default=list(CONDITIONS),
                        choices=list(CONDITIONS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--train-clips', type=int, default=600)
    parser.add_argument('--heldout-clips', type=int, default=200)
    parser.add_argument('--num-objects', type=int, default=2)
    parser.add_argument('--text-field', default='mixed', choices=('mixed', 'hod', 'narration'))
    parser.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more config overrides for every run, e.g. optim.lr=2e-3 '
                             'log_every=2 (passed as --config.KEY=VALUE)')
    args = parser.parse_args(argv)
    malformed = [item for item in args.set if '=' not in item]
    if malformed:
        parser.error(f'--set takes KEY=VALUE, got {malformed}')
    if args.steps < 1 or args.batch_size < 1:
        parser.error('--steps and --batch-size must be >= 1')
    return args


def run_command(condition: str, seed: int, args, workdir: Path) -> list[str]:
    spec = CONDITIONS[condition]
    return [sys.executable, str(REPO / 'main.py'), f'--config=configs/cotrain.py:{spec.config}',
            f'--workdir={workdir}', f'--config.seed={seed}',
            f'--config.total_steps={args.steps}', f'--config.data.batch_size={args.batch_size}',
            f'--config.data.text_field={args.text_field}',
            f'--config.demo.dir={Path(args.workdir) / "demo_data"}',
            f'--config.demo.train_clips={args.train_clips}',
            f'--config.demo.heldout_clips={args.heldout_clips}',
            f'--config.demo.num_objects={args.num_objects}',
            f'--config.checkpoint.every_steps={args.steps}',
            f'--config.evals.demo.num_frames={spec.eval_frames}', *spec.overrides,
            *(f'--config.{item}' for item in args.set)]


def evaluate_final_checkpoint(condition: str, workdir: Path, args) -> dict[str, float]:
    """The demo evaluator on the run's last checkpoint (with the fast-motion pair accuracy,
    which needs narration queries), cached in WORKDIR/CONDITION_seedS/final_eval.json."""
    cached = workdir / 'final_eval.json'
    if cached.exists():
        return json.loads(cached.read_text())
    import egovideo_jax
    from egovideo_jax.evaluate.registry import build_evaluators, default_config
    from egovideo_jax.io.atomic import write_json_atomically
    paths = json.loads((Path(args.workdir) / 'demo_data' / 'demo_manifest.json').read_text())
    spec = CONDITIONS[condition]
    section = default_config('demo_retrieval')
    section.update(records=paths['paths']['heldout'],
                   actions_csv=paths['paths']['heldout_actions'],
                   text_field='narration', num_frames=spec.eval_frames, num_examples=0)
    model = egovideo_jax.load(str(workdir / 'checkpoints' / str(args.steps)), variant='demo',
                              mode=spec.mode, verbose=False)
    evaluator = build_evaluators({'demo': section}, workdir=workdir / 'final_eval')['demo']
    metrics = evaluator.run(model)
    write_json_atomically(cached, metrics)
    return metrics


def train_and_evaluate(condition: str, seed: int, args) -> dict[str, float]:
    workdir = Path(args.workdir) / f'{condition}_seed{seed}'
    if not (workdir / 'checkpoints' / str(args.steps)).exists():
        command = run_command(condition, seed, args, workdir)
        print(f'[{condition} seed {seed}] ' + ' '.join(command[1:]), flush=True)
        start = time.time()
        subprocess.run(command, cwd=REPO, check=True)
        print(f'[{condition} seed {seed}] done in {time.time() - start:.0f} s', flush=True)
    return evaluate_final_checkpoint(condition, workdir, args)


def summarise(results: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean (and, with several seeds, the sample standard deviation) per condition."""
    summary = {}
    for condition, by_seed in results.items():
        row = {}
        for key in REPORTED:
            values = [metrics[key] for metrics in by_seed.values()]
            row[key] = statistics.fmean(values)
            if len(values) > 1:
                row[f'{key}_std'] = statistics.stdev(values)
        summary[condition] = row
    return summary


def markdown_table(summary: dict[str, dict[str, float]], args) -> str:
    header = ['condition', *COLUMNS.values()]
    lines = ['| ' + ' | '.join(header) + ' |', '| --- |' + ' ---: |' * len(COLUMNS)]
    for condition, row in summary.items():
        cells = []
        for key in COLUMNS:
            cell = f'{row[key]:.1f}'
            if f'{key}_std' in row:
                cell += f' ± {row[key + "_std"]:.1f}'
            cells.append(cell)
        lines.append(f'| `{condition}` | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append(f'Percent; {args.steps} steps x batch {args.batch_size}, seeds '
                 f'{", ".join(map(str, args.seeds))}, {args.train_clips} training and '
                 f'{args.heldout_clips} held-out clips, {args.num_objects} objects, '
                 f'text field `{args.text_field}`.')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    results = {condition: {seed: train_and_evaluate(condition, seed, args)
                           for seed in args.seeds}
               for condition in args.conditions}
    summary = summarise(results)
    table = markdown_table(summary, args)
    report = {'settings': vars(args), 'per_seed': results, 'summary': summary,
              'commands': {c: ' '.join(run_command(c, args.seeds[0], args,
                                                   Path(args.workdir) / f'{c}_seed{args.seeds[0]}')[1:])
                           for c in args.conditions}}
    Path(args.workdir, 'results.json').write_text(json.dumps(report, indent=2))
    Path(args.workdir, 'results.md').write_text(table + '\n')
    print(table)
    return report


if __name__ == '__main__':
    main()
