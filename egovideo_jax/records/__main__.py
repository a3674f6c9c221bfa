"""Clip record tools.

    # reference CSV (video_id,start_second,end_second,text[,dataset]) + mp4 videos -> records
    python -m egovideo_jax.records convert --csv narrations.csv --video-root videos/ \\
        --out records/ [--frames-per-clip 32] [--short-side 256] [--format tfrecord]
    # summary of a dataset directory; --verify checks every checksum, CRC and index
    python -m egovideo_jax.records inspect records/ [--verify]
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.records',
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    convert = commands.add_parser('convert', help='reference CSV + mp4 videos -> clip records')
    convert.add_argument('--csv', required=True,
                         help='rows video_id,start_second,end_second,text[,dataset]')
    convert.add_argument('--video-root', required=True,
                         help='holds VIDEO_ID.mp4, or VIDEO_ID/CHUNK.mp4 chunks')
    convert.add_argument('--out', required=True, help='output dataset directory (new or empty)')
    convert.add_argument('--frames-per-clip', type=int, default=32)
    convert.add_argument('--short-side', type=int, default=256,
                         help='stored frames are resized to this short side')
    convert.add_argument('--chunk-seconds', type=float, default=15.0,
                         help='length of each VIDEO_ID/CHUNK.mp4 chunk')
    convert.add_argument('--records-per-shard', type=int, default=256)
    convert.add_argument('--format', choices=('tfrecord', 'arrayrecord'), default='tfrecord')
    convert.add_argument('--jpeg-quality', type=int, default=90)
    convert.add_argument('--workers', type=int, default=1, help='decoding processes')
    convert.add_argument('--max-skip-fraction', type=float, default=0.05,
                         help='exit non-zero when a larger fraction of rows is skipped '
                              '(the converted records are kept)')
    inspect = commands.add_parser('inspect', help='summarise (and verify) a dataset directory')
    inspect.add_argument('directory')
    inspect.add_argument('--record', type=int, default=0, help='which record to summarise')
    inspect.add_argument('--verify', action='store_true',
                         help='check every checksum, record count, CRC, index and schema')
    return parser


def _convert(args, argv) -> int:
    from egovideo_jax.records.convert_csv import SKIPPED_NAME, convert_csv

    config = {key: value for key, value in vars(args).items() if key != 'command'}
    producer = {'command': shlex.join(['python', '-m', 'egovideo_jax.records', *argv]),
                'config': config}
    summary = convert_csv(
        args.csv, args.video_root, args.out, frames_per_clip=args.frames_per_clip,
        short_side=args.short_side, chunk_seconds=args.chunk_seconds,
        records_per_shard=args.records_per_shard, format=args.format,
        jpeg_quality=args.jpeg_quality, workers=args.workers, producer=producer)
    print(f'wrote {summary.num_clips} clips in {len(summary.manifest["shards"])} shards to '
          f'{args.out}')
    print(f'skipped {len(summary.skipped)} of {summary.num_rows} rows '
          f'({100 * summary.skipped_fraction:.1f}%), listed in {args.out}/{SKIPPED_NAME}')
    for reason, count in summary.skip_counts().items():
        print(f'  {reason}: {count}')
    if summary.skipped_fraction > args.max_skip_fraction:
        print(f'error: skipped fraction {summary.skipped_fraction:.3f} exceeds '
              f'--max-skip-fraction {args.max_skip_fraction}', file=sys.stderr)
        return 1
    return 0


def _inspect(args) -> int:
    from egovideo_jax.records.dataset import open_dataset, verify_dataset
    from egovideo_jax.records.summary import describe_clip, describe_dataset
    from egovideo_jax.records.tfrecord import RecordError

    opened = True
    try:
        dataset = open_dataset(args.directory)
        print('\n'.join(describe_dataset(dataset)))
        if len(dataset):
            print('\n'.join(describe_clip(dataset.decode(args.record))))
    except (OSError, ValueError, IndexError) as error:  # RecordError is a ValueError
        kind = 'record' if isinstance(error, RecordError) else 'dataset'
        print(f'error: cannot read {kind}: {error}', file=sys.stderr)
        opened = False
    if not args.verify:
        return 0 if opened else 1
    problems = verify_dataset(args.directory)
    for problem in problems:
        print(f'problem: {problem}')
    print(f'verify: {len(problems)} problems' if problems else 'verify: OK')
    return 1 if problems or not opened else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == 'convert':
        try:
            return _convert(args, argv)
        except (OSError, ValueError) as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
    return _inspect(args)


if __name__ == '__main__':
    sys.exit(main())
