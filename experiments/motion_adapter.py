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

and evaluates each on the held-out demo split: text->video (and video->text) R@1 and mAP over
all clips and over the fast-motion-only actions (shake vs hold, quick back-and-forth vs a slow
move and back: 4 evaluation frames show the same thing, 16 do not). The demo data is built
once under WORKDIR/demo_data. Runs that finished are not repeated (a re-run only re-reads
their metrics; an interrupted one resumes from its checkpoint). Writes WORKDIR/results.json
and WORKDIR/results.md (the README table) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = 'visual/blocks[^/]*/adapter/.*'
CONDITIONS = {
    'single_4f': ('demo,stage1', ['--config.model.num_frames=4',
                                  '--config.evals.demo.num_frames=4']),
    'single_16f': ('demo,stage1', ['--config.model.num_frames=16',
                                   '--config.evals.demo.num_frames=16']),
    'slowfast_trained': ('demo', []),
    'slowfast_identity': ('demo', [f'--config.optim.frozen=("logit_scale", "{ADAPTERS}")']),
}
REPORTED = ('all/t2v_r1', 'all/t2v_map', 'fast_motion/t2v_r1', 'fast_motion/t2v_map',
            'all/v2t_r1', 'all/v2t_map', 'fast_motion/v2t_r1', 'fast_motion/v2t_map')
EVAL_PREFIX = 'eval/demo/'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--conditions', nargs='+', default=list(CONDITIONS),
                        choices=list(CONDITIONS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--steps', type=int, default=1200)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--train-clips', type=int, default=600)
    parser.add_argument('--heldout-clips', type=int, default=200)
    parser.add_argument('--num-objects', type=int, default=2)
    parser.add_argument('--text-field', default='mixed', choices=('mixed', 'hod', 'narration'))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error('--steps and --batch-size must be >= 1')
    return args


def run_command(condition: str, seed: int, args, workdir: Path) -> list[str]:
    config, overrides = CONDITIONS[condition]
    return [sys.executable, str(REPO / 'main.py'), f'--config=configs/cotrain.py:{config}',
            f'--workdir={workdir}', f'--config.seed={seed}',
            f'--config.total_steps={args.steps}', f'--config.data.batch_size={args.batch_size}',
            f'--config.data.text_field={args.text_field}',
            f'--config.demo.dir={Path(args.workdir) / "demo_data"}',
            f'--config.demo.train_clips={args.train_clips}',
            f'--config.demo.heldout_clips={args.heldout_clips}',
            f'--config.demo.num_objects={args.num_objects}',
            f'--config.checkpoint.every_steps={args.steps}', *overrides]


def final_eval(metrics_jsonl: Path, steps: int) -> dict[str, float] | None:
    """The evaluation logged at `steps` in a run's metrics.jsonl, or None."""
    if not metrics_jsonl.exists():
        return None
    found = None
    for line in metrics_jsonl.read_text().splitlines():
        row = json.loads(line)
        if row.get('step') == steps and any(k.startswith(EVAL_PREFIX) for k in row):
            found = {k[len(EVAL_PREFIX):]: v for k, v in row.items() if k.startswith(EVAL_PREFIX)}
    return found


def train_and_evaluate(condition: str, seed: int, args) -> dict[str, float]:
    workdir = Path(args.workdir) / f'{condition}_seed{seed}'
    metrics = final_eval(workdir / 'metrics.jsonl', args.steps)
    if metrics is None:
        command = run_command(condition, seed, args, workdir)
        print(f'[{condition} seed {seed}] ' + ' '.join(command[1:]), flush=True)
        start = time.time()
        subprocess.run(command, cwd=REPO, check=True)
        print(f'[{condition} seed {seed}] done in {time.time() - start:.0f} s', flush=True)
        metrics = final_eval(workdir / 'metrics.jsonl', args.steps)
        if metrics is None:
            raise RuntimeError(f'{workdir}/metrics.jsonl has no evaluation at step {args.steps}')
    return metrics


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
    columns = ('all/t2v_r1', 'all/t2v_map', 'fast_motion/t2v_r1', 'fast_motion/t2v_map')
    header = ['condition', 'T->V R@1', 'T->V mAP', 'fast-motion T->V R@1',
              'fast-motion T->V mAP']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for condition, row in summary.items():
        cells = []
        for key in columns:
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
