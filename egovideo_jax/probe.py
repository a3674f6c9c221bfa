"""Linear probe on frozen EgoVideo features: extract once (cached), fit, evaluate.

    python -m egovideo_jax.probe --checkpoint CKPT --variant B/16 --mode slowfast \\
        --train-records EK100/train --records EK100/validation --head verb --out OUT

    python -m egovideo_jax.probe --checkpoint CKPT --out OUT \\
        --train-classes egocentric=ego/train,exocentric=exo/train \\
        --classes egocentric=ego/heldout,exocentric=exo/heldout

The classes are a labelled records directory's `head` (its classes.json), or one records
directory per class. Every input is checked before the model loads. Writes
`OUT/linear_probe/{metrics.json,probe.npz}` and caches the features in
`OUT/linear_probe/features/` (a rerun, or a killed run restarted, embeds only what is
missing). `probe.npz` is what the HOD pipeline's ego-style filter reads
(`--config.ego_filter.probe`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from egovideo_jax.model.config import MODES, VARIANTS

EVALUATOR = 'linear_probe'


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.probe',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', required=True,
                        help='the frozen model: anything egovideo_jax.load reads')
    parser.add_argument('--variant', default='B/16', choices=sorted(VARIANTS))
    parser.add_argument('--mode', default='slowfast', choices=MODES)
    parser.add_argument('--num-frames', type=int, default=4,
                        help="the model's temporal table length (a checkpoint's own wins)")
    parser.add_argument('--clip-frames', type=int, default=16,
                        help='frames per clip for single-branch models (slow/fast models '
                        'take their own 4 + 16)')
    parser.add_argument('--train-records', default='', help='labelled training records')
    parser.add_argument('--records', default='', help='labelled evaluation records')
    parser.add_argument('--head', default='action', help='the label head (verb, noun, action)')
    parser.add_argument('--train-classes', default='', metavar='NAME=DIR,NAME=DIR',
                        help='training records, one directory per class')
    parser.add_argument('--classes', default='', metavar='NAME=DIR,NAME=DIR',
                        help='evaluation records, one directory per class')
    parser.add_argument('--l2', type=float, action='append', metavar='VALUE',
                        help='regularisation strength; repeat for a grid searched on a '
                        'held-out fifth of the training clips (default 1e-4 ... 1)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--num-workers', type=int, default=4, help='clip-decoding threads')
    parser.add_argument('--cache-dir', default='', help='feature cache (default OUT/'
                        'linear_probe/features); share one across runs of the same model')
    parser.add_argument('--seed', type=int, default=0, help='the held-out split')
    parser.add_argument('--out', required=True, metavar='DIR')
    return parser.parse_args(argv)


def evaluator_section(args: argparse.Namespace) -> dict:
    section = dict(type=EVALUATOR, train_records=args.train_records, records=args.records,
                   head=args.head, train_classes=args.train_classes, classes=args.classes,
                   seed=args.seed, cache_dir=args.cache_dir, checkpoint=args.checkpoint,
                   batch_size=args.batch_size, num_workers=args.num_workers,
                   num_frames=args.clip_frames)
    if args.l2:
        section['l2_grid'] = tuple(args.l2)
    return section


def load_scorer(probe_path: str, positive: str, checkpoint: str = '', batch_size: int = 8):
    """A `linear_probe.ProbeScorer` for the probe file `probe_path`, over the frozen model
    it was fit on (`checkpoint`, default the one the probe file records)."""
    from egovideo_jax.api import load
    from egovideo_jax.evaluate.linear_probe import ProbeScorer
    from egovideo_jax.evaluate.probe import LinearProbe
    probe = LinearProbe.load(probe_path)
    spec = probe.feature_spec
    checkpoint = checkpoint or spec.get('checkpoint', '')
    if not checkpoint:
        raise ValueError(f'{probe_path} records no checkpoint; name the model it was fit on')
    model = load(checkpoint, variant=spec['variant'], mode=spec['mode'])
    return ProbeScorer(model, probe, positive, batch_size)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    from egovideo_jax.evaluate.registry import build_evaluators
    try:
        evaluator = build_evaluators({EVALUATOR: evaluator_section(args)}, workdir=args.out,
                                     config_key='probe')[EVALUATOR]
        evaluator.prepare()  # every input checked before the (slow) model load
        from egovideo_jax.api import load
        model = load(args.checkpoint, variant=args.variant, mode=args.mode,
                     num_frames=args.num_frames)
        evaluator.run(model)
    except ValueError as error:
        sys.exit(f'error: {error}')
    print(f'probe: {evaluator.outdir / "probe.npz"}; metrics: '
          f'{evaluator.outdir / "metrics.json"}')


if __name__ == '__main__':
    main()
