"""Weight conversion between PyTorch files and our Flax checkpoints.

    # any checkpoint load() reads (ours, reference .pt, OpenAI CLIP, safetensors) -> reference
    python -m egovideo_jax.convert to-torch --checkpoint ckpt_dir --variant B/16 \\
        --mode slowfast --out egovideo_b16.pt            # or .safetensors
    # reference .pt / OpenAI CLIP / safetensors -> our Orbax checkpoint directory
    python -m egovideo_jax.convert from-torch --checkpoint egovideo_b16.pt --variant B/16 \\
        --mode slowfast --out ckpt_dir

Every run prints the import report: loaded, new (left at initialisation) and unused keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from egovideo_jax.model.config import MODES, VARIANTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.convert',
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    for name, help_text, out_help in (
            ('to-torch', 'write the reference PyTorch layout (.pt container or .safetensors)',
             'output .pt/.pth (reference container) or .safetensors file'),
            ('from-torch', 'write our Orbax checkpoint directory from a PyTorch file',
             'output directory (must not hold a checkpoint yet)')):
        command = commands.add_parser(name, help=help_text)
        command.add_argument('--checkpoint', required=name == 'from-torch',
                             help='input checkpoint (to-torch without it: random init)')
        command.add_argument('--variant', default='B/16', choices=sorted(VARIANTS))
        command.add_argument('--mode', default='slowfast', choices=MODES)
        command.add_argument('--num-frames', type=int, default=4,
                             help='temporal table length T0 (a checkpoint\'s own length wins)')
        command.add_argument('--seed', type=int, default=0,
                             help='initialisation seed for parameters the input lacks')
        command.add_argument('--out', required=True, help=out_help)
        if name == 'to-torch':
            command.add_argument('--epoch', type=int, default=0,
                                 help="the container's 'epoch' field")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from egovideo_jax.api import load  # after argument errors: importing JAX takes seconds

    out = Path(args.out)
    if args.command == 'to-torch' and out.suffix not in ('.pt', '.pth', '.safetensors'):
        sys.exit(f'error: --out {out}: use a .pt, .pth or .safetensors file name')
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        sys.exit(f'error: --checkpoint {args.checkpoint} does not exist')
    try:
        model = load(args.checkpoint, variant=args.variant, mode=args.mode,
                     num_frames=args.num_frames, seed=args.seed)
        if args.command == 'from-torch':
            model.save(out)
        elif out.suffix == '.safetensors':
            model.export_safetensors(out)
        else:
            model.export_torch(out, epoch=args.epoch)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f'error: {error}')
    print(f'wrote {out} ({args.variant}, {args.mode})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
