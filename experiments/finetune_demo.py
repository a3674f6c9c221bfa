"""Zero-shot vs linear probe vs fine-tuned, from one co-trained checkpoint, on the demo's
action classification (`configs/finetune.py:demo_cls`'s held-out clips).

    python experiments/finetune_demo.py --workdir=/tmp/finetune_demo            # the table
    python experiments/finetune_demo.py --workdir=/tmp/fd --cotrain-steps=4 --finetune-steps=4 \\
        --train-clips=24 --heldout-clips=12 --batch-size=4                       # smoke run

1. co-trains the demo model (`configs/cotrain.py:demo`, `--cotrain-steps`), or takes
   `--checkpoint`;
2. zero-shot: the `classification` evaluator scores each held-out clip against the class
   names as text (verb, noun, and `verb noun` for actions);
3. linear probe: the `linear_probe` evaluator per head, on the frozen checkpoint's video
   embeddings of the labelled training clips (l2 chosen on a held-out fifth of them);
4. fine-tuned: `main.py --config=configs/finetune.py:demo_cls` from the checkpoint
   (`--finetune-steps`), its final `classification` evaluation.

All on the same demo build (WORKDIR/demo_data), seed and held-out clips. Finished steps are
not repeated. Writes WORKDIR/results.json and WORKDIR/results.md and prints the table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADS = ('verb', 'noun', 'action')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--checkpoint', help='start from this instead of co-training')
    parser.add_argument('--cotrain-steps', type=int, default=600)
    parser.add_argument('--finetune-steps', type=int, default=300)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--train-clips', type=int, default=600)
    parser.add_argument('--heldout-clips', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.cotrain_steps, args.finetune_steps, args.batch_size) < 1:
        parser.error('--cotrain-steps, --finetune-steps and --batch-size must be >= 1')
    return args


def run(name: str, command: list[str]) -> None:
    print(f'[{name}] ' + ' '.join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, cwd=REPO, check=True)
    print(f'[{name}] done in {time.time() - start:.0f} s', flush=True)


def common_flags(args, workdir: Path, steps: int) -> list[str]:
    return [f'--workdir={workdir}', f'--config.seed={args.seed}',
            f'--config.total_steps={steps}', f'--config.data.batch_size={args.batch_size}',
            f'--config.demo.dir={Path(args.workdir) / "demo_data"}',
            f'--config.demo.train_clips={args.train_clips}',
            f'--config.demo.heldout_clips={args.heldout_clips}',
            f'--config.checkpoint.every_steps={steps}']


def cotrained_checkpoint(args) -> str:
    if args.checkpoint:
        return args.checkpoint
    workdir = Path(args.workdir) / 'cotrain'
    final = workdir / 'checkpoints' / str(args.cotrain_steps)
    if not final.exists():
        run('co-train', [sys.executable, 'main.py', '--config=configs/cotrain.py:demo',
                         *common_flags(args, workdir, args.cotrain_steps)])
    return str(final)


def fine_tuned(args, checkpoint: str) -> tuple[dict[str, float], Path]:
    """The last `classification` evaluation of demo_cls from `checkpoint`, and the labelled
    held-out records it used."""
    workdir = Path(args.workdir) / 'finetune'
    metrics_file = workdir / 'metrics.jsonl'
    if not (workdir / 'report' / 'report.json').exists():  # written when the run ends
        run('fine-tune', [sys.executable, 'main.py', '--config=configs/finetune.py:demo_cls',
                          *common_flags(args, workdir, args.finetune_steps),
                          f'--config.init.checkpoint={checkpoint}',
                          f'--config.evals.demo_cls.every_steps={args.finetune_steps}'])
    evaluations = [json.loads(line) for line in metrics_file.read_text().splitlines()
                   if '"eval/demo_cls/' in line]
    prefix = 'eval/demo_cls/'
    final = {key[len(prefix):]: value for key, value in evaluations[-1].items()
             if key.startswith(prefix)}
    return final, Path(args.workdir) / 'demo_data'


def frozen_metrics(args, checkpoint: str, data: Path) -> dict[str, dict[str, float]]:
    """Zero-shot and linear-probe metrics of the frozen checkpoint (cached)."""
    cached = Path(args.workdir) / 'frozen.json'
    if cached.exists():
        return json.loads(cached.read_text())
    import egovideo_jax
    from egovideo_jax.demo.finetune import LABELLED_SUFFIX
    from egovideo_jax.evaluate.registry import build_evaluators
    from egovideo_jax.io.atomic import write_json_atomically
    # label_demo_splits writes them beside each split's records
    train, heldout = (str(data / split / f'{split}{LABELLED_SUFFIX}')
                      for split in ('train', 'heldout'))
    sections = {'zero_shot': dict(type='classification', records=heldout, batch_size=16)}
    for head in HEADS:
        sections[f'probe_{head}'] = dict(type='linear_probe', train_records=train,
                                         records=heldout, head=head, batch_size=16,
                                         cache_dir=str(Path(args.workdir) / 'features'),
                                         checkpoint=checkpoint)
    model = egovideo_jax.load(checkpoint, variant='demo', mode='slowfast', verbose=False)
    evaluators = build_evaluators(sections, workdir=Path(args.workdir) / 'frozen')
    found = {name: evaluator.run(model) for name, evaluator in evaluators.items()}
    write_json_atomically(cached, found)
    return found


def table(rows: dict[str, dict[str, float]]) -> str:
    columns = [f'{head}_{metric}' for head in HEADS for metric in ('top1', 'mean_class_acc')]
    lines = ['| method | ' + ' | '.join(columns) + ' |',
             '| --- |' + ' ---: |' * len(columns)]
    for name, metrics in rows.items():
        lines.append(f'| {name} | ' + ' | '.join(
            f'{metrics[column]:.1f}' if column in metrics else '-' for column in columns) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    checkpoint = cotrained_checkpoint(args)
    tuned, data = fine_tuned(args, checkpoint)
    frozen = frozen_metrics(args, checkpoint, data)
    probe = {f'{head}_{metric}': frozen[f'probe_{head}'][metric]
             for head in HEADS for metric in ('top1', 'mean_class_acc')}
    rows = {'zero-shot (class names as text)': frozen['zero_shot'],
            'linear probe (frozen features)': probe,
            f'fine-tuned ({args.finetune_steps} steps)': tuned}
    results = {'arguments': vars(args), 'checkpoint': checkpoint, 'rows': rows}
    (Path(args.workdir) / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    text = table(rows)
    (Path(args.workdir) / 'results.md').write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
