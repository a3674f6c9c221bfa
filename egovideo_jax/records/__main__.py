"""Clip record tools.

    # reference CSV (video_id,start_second,end_second,text[,dataset]) + mp4 videos -> records
    python -m egovideo_jax.records convert --csv narrations.csv --video-root videos/ \\
        --out records/ [--frames-per-clip 32] [--short-side 256] [--format tfrecord]
    # EPIC-KITCHENS-100 clips CSV (+ class CSVs, + MIR sentences and relevancy) -> labelled records
    python -m egovideo_jax.records convert-epic EPIC_100_train.csv --video-root videos/ \\
        --out records/ [--verb-classes EPIC_100_verb_classes.csv] \\
        [--noun-classes EPIC_100_noun_classes.csv] [--action-classes-from CSV ...] \\
        [--sentences EPIC_100_retrieval_train_sentence.csv --relevancy RELEVANCY.pkl]
    # EGTEA Gaze+ split file + action_idx.txt + trimmed clips -> labelled records
    python -m egovideo_jax.records convert-egtea test_split1.txt --action-idx action_idx.txt \\
        --video-root cropped_clips/ --out records/
    # summary of a dataset directory; --verify checks every checksum, CRC and index
    python -m egovideo_jax.records inspect records/ [--verify]
"""
from __future__ import annotations

import argparse
import os
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
    convert.add_argument('--chunk-seconds', type=float, default=15.0,
                         help='length of each VIDEO_ID/CHUNK.mp4 chunk')
    _add_output_options(convert)
    epic = commands.add_parser(
        'convert-epic', help='EPIC-KITCHENS-100 CSV + videos -> labelled clip records')
    epic.add_argument('clips_csv', metavar='CLIPS_CSV',
                      help='EPIC_100_train.csv, EPIC_100_validation.csv or '
                           'EPIC_100_retrieval_train.csv (one record per row)')
    epic.add_argument('--video-root', required=True,
                      help='holds VIDEO_ID.mp4, or PARTICIPANT_ID/VIDEO_ID.MP4')
    epic.add_argument('--out', required=True, help='output dataset directory (new or empty)')
    epic.add_argument('--verb-classes', metavar='CSV',
                      help='EPIC_100_verb_classes.csv: verb names (default: the class ids)')
    epic.add_argument('--noun-classes', metavar='CSV',
                      help='EPIC_100_noun_classes.csv: noun names (default: the class ids)')
    epic.add_argument('--action-classes-from', metavar='CSV', nargs='+', action='extend',
                      help='the action set is every (verb_class, noun_class) pair of these '
                           'CSVs, sorted (default: CLIPS_CSV); give the training CSV when '
                           'converting the validation split (put CLIPS_CSV first)')
    epic.add_argument('--sentences', metavar='CSV',
                      help='MIR: narration_id,narration sentence CSV (needs --relevancy)')
    epic.add_argument('--relevancy', metavar='PKL',
                      help='MIR: pickled relevancy matrix, CLIPS_CSV rows x sentences')
    epic.add_argument('--caption-threshold', type=float, default=0.1,
                      help='MIR: captions are the sentences with relevancy above this')
    epic.add_argument('--max-captions', type=int, default=0,
                      help='MIR: keep at most this many captions per clip (0: all)')
    _add_output_options(epic)
    egtea = commands.add_parser(
        'convert-egtea', help='EGTEA Gaze+ split file + trimmed clips -> labelled records')
    egtea.add_argument('split', metavar='SPLIT_TXT',
                       help='train_split1.txt / test_split1.txt: clip_id action_idx '
                            '[verb_idx noun_idx], 1-based')
    egtea.add_argument('--action-idx', required=True, metavar='TXT',
                       help='action_idx.txt: "Name_With_Underscores idx" lines')
    egtea.add_argument('--video-root', required=True,
                       help='holds FIRST-THREE-FIELDS/CLIP_ID.mp4 (the trimmed clips)')
    egtea.add_argument('--out', required=True, help='output dataset directory (new or empty)')
    egtea.add_argument('--verb-idx', metavar='TXT',
                       help='verb_idx.txt: verb names (default: the 1-based ids)')
    egtea.add_argument('--noun-idx', metavar='TXT',
                       help='noun_idx.txt: noun names (default: the 1-based ids)')
    _add_output_options(egtea)
    inspect = commands.add_parser('inspect', help='summarise (and verify) a dataset directory')
    inspect.add_argument('directory')
    inspect.add_argument('--record', type=int, default=0, help='which record to summarise')
    inspect.add_argument('--verify', action='store_true',
                         help='check every checksum, record count, CRC, index and schema')
    return parser


def _add_output_options(command: argparse.ArgumentParser) -> None:
    """Frame extraction and output options shared by the convert commands."""
    command.add_argument('--frames-per-clip', type=int, default=32)
    command.add_argument('--short-side', type=int, default=256,
                         help='stored frames are resized to this short side')
    command.add_argument('--records-per-shard', type=int, default=256)
    command.add_argument('--format', choices=('tfrecord', 'arrayrecord'), default='tfrecord')
    command.add_argument('--jpeg-quality', type=int, default=90)
    command.add_argument('--workers', type=int, default=1, help='decoding processes')
    command.add_argument('--max-skip-fraction', type=float, default=0.05,
                         help='exit non-zero when a larger fraction of rows is skipped '
                              '(the converted records are kept)')
    command.add_argument('--no-progress', dest='progress', action='store_false',
                         help='no progress bar on stderr')


def _producer(args, argv) -> dict:
    config = {key: value for key, value in vars(args).items() if key != 'command'}
    return {'command': shlex.join(['python', '-m', 'egovideo_jax.records', *argv]),
            'config': config}


def _output_kwargs(args, argv) -> dict:
    return dict(frames_per_clip=args.frames_per_clip, short_side=args.short_side,
                records_per_shard=args.records_per_shard, format=args.format,
                jpeg_quality=args.jpeg_quality, workers=args.workers,
                producer=_producer(args, argv), progress=args.progress)


def _convert(args, argv) -> int:
    from egovideo_jax.records.convert_csv import convert_csv

    summary = convert_csv(args.csv, args.video_root, args.out,
                          chunk_seconds=args.chunk_seconds, **_output_kwargs(args, argv))
    return _report(summary, args)


def _convert_epic(args, argv) -> int:
    from egovideo_jax.records.finetune_sources import convert_epic

    if (args.sentences is None) != (args.relevancy is None):
        raise ValueError('MIR captions need both --sentences and --relevancy')
    summary = convert_epic(
        args.clips_csv, args.video_root, args.out, verb_classes_csv=args.verb_classes,
        noun_classes_csv=args.noun_classes, action_classes_from=args.action_classes_from,
        sentences_csv=args.sentences, relevancy_pkl=args.relevancy,
        caption_threshold=args.caption_threshold, max_captions=args.max_captions,
        **_output_kwargs(args, argv))
    return _report_finetune(summary, args)


def _convert_egtea(args, argv) -> int:
    from egovideo_jax.records.finetune_sources import convert_egtea

    summary = convert_egtea(args.split, args.action_idx, args.video_root, args.out,
                            verb_idx=args.verb_idx, noun_idx=args.noun_idx,
                            **_output_kwargs(args, argv))
    return _report_finetune(summary, args)


def _report_finetune(summary, args) -> int:
    from egovideo_jax.records.classes import CLASSES_NAME

    _print_conversion(summary.conversion, args)
    for line in summary.lines():
        print(line)
    print(f'class names in {args.out}/{CLASSES_NAME}')
    return _exit_status(summary.conversion, args)


def _report(summary, args) -> int:
    _print_conversion(summary, args)
    return _exit_status(summary, args)


def _print_conversion(summary, args) -> None:
    from egovideo_jax.records.convert_csv import SKIPPED_NAME

    print(f'wrote {summary.num_clips} clips in {len(summary.manifest["shards"])} shards to '
          f'{args.out}')
    print(f'skipped {len(summary.skipped)} of {summary.num_rows} rows '
          f'({100 * summary.skipped_fraction:.1f}%), listed in {args.out}/{SKIPPED_NAME}')
    for reason, count in summary.skip_counts().items():
        print(f'  {reason}: {count}')


def _exit_status(summary, args) -> int:
    """1 (and why, on stderr) when more than --max-skip-fraction of the rows were skipped."""
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
        classes = _read_classes(args.directory)
        if len(dataset):
            clip = dataset.decode(args.record)
            print('\n'.join(describe_clip(clip)))
            if classes is not None and clip['labels']:
                print('  label names: ' + ', '.join(
                    f'{head} {classes.names[head][index]!r}'
                    if head in classes.names and 0 <= index < len(classes.names[head])
                    else f'{head} {index} (not in classes.json)'
                    for head, index in clip['labels'].items()))
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


def _read_classes(directory):
    """The dataset's classes.json (None without one), its summary printed."""
    from egovideo_jax.records.classes import CLASSES_NAME, read_classes

    if not os.path.isfile(os.path.join(directory, CLASSES_NAME)):
        return None
    classes = read_classes(directory)
    print(f'  classes ({CLASSES_NAME}, from {classes.source}): ' + ', '.join(
        f'{head} {len(names)}' for head, names in classes.names.items()))
    return classes


COMMANDS = {'convert': _convert, 'convert-epic': _convert_epic, 'convert-egtea': _convert_egtea}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command in COMMANDS:
        try:
            return COMMANDS[args.command](args, argv)
        except (OSError, ValueError) as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
    return _inspect(args)


if __name__ == '__main__':
    sys.exit(main())
