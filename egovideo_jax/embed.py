"""Video and text embeddings from an EgoVideo checkpoint, written to one .npz file.

    python -m egovideo_jax.embed --checkpoint CKPT --variant B/16 --mode slowfast \\
        --video a.mp4 --video b.mp4 --text "C cuts the onion" --out embeddings.npz

Each video is eval-sampled over its whole length (slowfast: the slow and the fast clip
independently), resized on the short side, centre-cropped and CLIP-normalised. The npz holds
`video_embeddings [V, E]`, `video_paths`, `text_embeddings [S, E]`, `texts`, `variant` and
`mode`; embeddings are L2-normalised.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from egovideo_jax.model.config import MODES, VARIANTS


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.embed',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', help='model checkpoint; without it the model is '
                        'randomly initialised (only useful for smoke tests)')
    parser.add_argument('--variant', default='B/16', choices=sorted(VARIANTS))
    parser.add_argument('--mode', default='slowfast', choices=MODES)
    parser.add_argument('--video', action='append', default=[], metavar='PATH',
                        help='video file to embed; repeat for several')
    parser.add_argument('--text', action='append', default=[],
                        help='text to embed; repeat for several')
    parser.add_argument('--out', required=True, metavar='FILE.npz', help='output file')
    parser.add_argument('--num-frames', type=int, default=4,
                        help="frames of the (slow) video input, the model's temporal table "
                        "length (default: 4; a checkpoint's own table length wins)")
    parser.add_argument('--fast-frames', type=int,
                        help="frames of the fast input in slowfast mode (default: the model's, 16)")
    args = parser.parse_args(argv)
    if not args.video and not args.text:
        parser.error('nothing to embed: give at least one --video or --text')
    if args.num_frames < 1:
        parser.error(f'--num-frames must be >= 1, got {args.num_frames}')
    if args.fast_frames is not None:
        if args.mode != 'slowfast':
            parser.error('--fast-frames only applies to --mode slowfast')
        if args.fast_frames < 1:
            parser.error(f'--fast-frames must be >= 1, got {args.fast_frames}')
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    # Fail on bad paths before the (slow) model load.
    for path in args.video:
        if not os.path.isfile(path):
            sys.exit(f'error: video file not found: {path}')
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        sys.exit(f'error: output directory does not exist: {out_dir}')

    from egovideo_jax.api import load  # lazy: JAX start-up is not needed for --help or errors
    from egovideo_jax.media.video import load_clips

    if args.checkpoint is None:
        print('warning: no --checkpoint given; the model is randomly initialised and its '
              'embeddings are meaningless', file=sys.stderr)
    model = load(checkpoint=args.checkpoint, variant=args.variant, mode=args.mode,
                 num_frames=args.num_frames)
    config = model.config
    frame_counts = [config.vision.num_frames]
    if config.mode == 'slowfast':
        frame_counts.append(args.fast_frames or config.fast_frames)

    video_embeddings = []
    for number, path in enumerate(args.video, start=1):
        try:
            clips = load_clips(path, frame_counts, config.vision.image_size)
        except ValueError as error:
            sys.exit(f'error: {error}')
        embedding = model.encode_video(*(clip[None] for clip in clips))
        video_embeddings.append(np.asarray(embedding, np.float32))
        print(f'[{number}/{len(args.video)}] {path}: frames {frame_counts}', flush=True)
    text_embeddings = (np.asarray(model.encode_text(args.text), np.float32) if args.text
                       else np.zeros((0, config.embed_dim), np.float32))
    outputs = {
        'video_embeddings': (np.concatenate(video_embeddings) if video_embeddings
                             else np.zeros((0, config.embed_dim), np.float32)),
        'video_paths': np.array(args.video, dtype=str),
        'text_embeddings': text_embeddings,
        'texts': np.array(args.text, dtype=str),
        'variant': np.array(args.variant),
        'mode': np.array(config.mode),
    }
    with open(args.out, 'wb') as file:  # a file object: np.savez keeps the name as given
        np.savez(file, **outputs)
    print(f'wrote {args.out}: video_embeddings {outputs["video_embeddings"].shape}, '
          f'text_embeddings {outputs["text_embeddings"].shape}')


if __name__ == '__main__':
    main()
