"""Input pipeline benchmark: clip records through the Grain loader vs. decoding the mp4 files.

    python benchmarks/loader.py                      # ~2 min on 2 cores (+ ~1 min first build)
    python benchmarks/loader.py --quick --out /tmp/loader.json   # tiny sizes, seconds

Builds a benchmark dataset once under `--cache-dir` (reused by later runs): `--clips`
synthetic mp4 videos (PyAV/libx264, a panning, shaking textured background with moving
coloured shapes, so H.264 and JPEG sizes are realistic) and a reference CSV with one row per
video covering the whole video, converted to clip records by
`python -m egovideo_jax.records convert` (32 frames per clip, short side 256).

Then measures training examples (slow/fast: 4 + 16 frames, random resized crop + flip at
`--crop` px, CLIP normalisation, tokenisation), after `--warmup` batches or clips:
  * `records w=K`: `make_iterator(train=True)` with `worker_count` K (0: decoding threads in
    this process); MB/s counts the serialised records the examples came from.
  * `mp4 train`: the same work straight from the mp4 files, one clip after another in this
    process as the reference does: train-sampled frame indices over the whole video, one
    PyAV decode pass, random resized crop + flip per branch, normalise, tokenise; MB/s counts
    the mp4 files.
  * `mp4 load_clips`: `egovideo_jax.media.video.load_clips` (eval sampling, short-side resize
    + centre crop), for reference.
Each setting runs `--seconds` (or until `--max-clips`). Prints a table and writes JSON to
`--out` with the machine, the dataset and every setting.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import av
import numpy as np
from machine_info import machine, write_results
from PIL import Image

PACKAGES = ('grain', 'av', 'numpy', 'pillow', 'jax')  # versions recorded in the JSON

# Sizes: the full benchmark and the quick one (tests).
FULL = dict(clips=24, clip_seconds=8.0, fps=30, width=456, height=256, frames_per_clip=32,
            short_side=256, crop=224, batch_size=8, seconds=20.0, max_clips=2000, warmup=3)
QUICK = dict(clips=4, clip_seconds=2.0, fps=15, width=228, height=128, frames_per_clip=16,
             short_side=128, crop=112, batch_size=4, seconds=2.0, max_clips=200, warmup=1)
DATASET_KEYS = ('clips', 'clip_seconds', 'fps', 'width', 'height', 'frames_per_clip',
                'short_side')
NUM_FRAMES, FAST_FRAMES = 4, 16
CACHE_VERSION = 1  # bump when the synthetic videos change
VERBS = ('takes', 'puts down', 'opens', 'cuts', 'washes', 'turns', 'holds', 'moves')
OBJECTS = ('the knife', 'a cup', 'the drawer', 'an onion', 'the lid', 'a towel', 'the pan')
HANDS = ('left hand', 'right hand', 'both hands')


# ----------------------------------------------------------------------------- dataset

def synthetic_frames(seed: int, num_frames: int, fps: float, width: int, height: int):
    """uint8 RGB frames: a smooth coloured background with fine texture, panned and shaken
    like a head-mounted camera, sensor noise, and moving circles and rectangles."""
    rng = np.random.default_rng(seed)
    pad = max(width, height) // 4
    big_height, big_width = height + 2 * pad, width + 2 * pad

    def smooth(cell, channels, low, high):
        shape = (big_height // cell + 2, big_width // cell + 2)
        coarse = rng.integers(low, high, (*shape, channels), dtype=np.uint8)
        image = Image.fromarray(coarse[..., 0] if channels == 1 else coarse)
        image = image.resize((shape[1] * cell, shape[0] * cell), Image.Resampling.BICUBIC)
        return np.asarray(image)[:big_height, :big_width].reshape(
            big_height, big_width, -1).astype(np.int16)

    background = smooth(48, 3, 40, 220) + smooth(6, 1, 0, 60) - 30
    background += rng.integers(-10, 11, background.shape, dtype=np.int16)
    noise = rng.integers(-3, 4, (8, height, width, 3), dtype=np.int16)
    rows, cols = np.mgrid[0:height, 0:width]
    shapes = [dict(radius=rng.uniform(0.05, 0.16) * height,
                   position=rng.uniform([0, 0], [width, height]),
                   velocity=rng.uniform(-0.5, 0.5, 2) * height,
                   color=rng.integers(0, 256, 3), circle=rng.random() < 0.5)
              for _ in range(6)]
    phase = rng.uniform(0, 2 * np.pi, 2)
    for k in range(num_frames):
        t = k / fps
        left = int(pad + 0.8 * pad * np.sin(1.3 * t + phase[0]) + rng.integers(-4, 5))
        top = int(pad + 0.8 * pad * np.sin(0.9 * t + phase[1]) + rng.integers(-4, 5))
        frame = background[top:top + height, left:left + width] + noise[k % len(noise)]
        for shape in shapes:
            x, y = shape['position'] + shape['velocity'] * t
            x, y = abs(x % (2 * width) - width), abs(y % (2 * height) - height)  # bounce
            r = shape['radius']
            y0, y1 = int(max(0, y - r)), int(min(height, y + r + 1))
            x0, x1 = int(max(0, x - r)), int(min(width, x + r + 1))
            if shape['circle']:
                inside = (cols[y0:y1, x0:x1] - x) ** 2 + (rows[y0:y1, x0:x1] - y) ** 2 <= r * r
                frame[y0:y1, x0:x1][inside] = shape['color']
            else:
                frame[y0:y1, x0:x1] = shape['color']
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_video(path: str, seed: int, sizes: dict) -> None:
    """H.264 (libx264 defaults: CRF 23, preset medium), yuv420p."""
    num_frames = round(sizes['clip_seconds'] * sizes['fps'])
    with av.open(path, mode='w') as container:
        stream = container.add_stream('libx264', rate=sizes['fps'])
        stream.width, stream.height, stream.pix_fmt = sizes['width'], sizes['height'], 'yuv420p'
        for frame in synthetic_frames(seed, num_frames, sizes['fps'], sizes['width'],
                                      sizes['height']):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())


def narration(rng: np.random.Generator) -> str:
    return (f'#C C {VERBS[rng.integers(len(VERBS))]} {OBJECTS[rng.integers(len(OBJECTS))]} '
            f'with the {HANDS[rng.integers(len(HANDS))]}')


def build_dataset(cache_dir: str, sizes: dict) -> str:
    """The cached benchmark dataset directory (`videos/`, `clips.csv`, `records/`), built
    in a temporary directory and renamed, so an interrupted build is never reused."""
    from egovideo_jax.io.atomic import write_json_atomically
    key = json.dumps({'version': CACHE_VERSION, **{k: sizes[k] for k in DATASET_KEYS}},
                     sort_keys=True)
    name = 'egovideo_loader_bench-' + hashlib.sha256(key.encode()).hexdigest()[:12]
    final = os.path.join(cache_dir, name)
    if os.path.exists(os.path.join(final, 'records', 'manifest.json')):
        print(f'using the cached benchmark dataset {final}')
        return final
    os.makedirs(cache_dir, exist_ok=True)
    building = f'{final}.building-{os.getpid()}'
    shutil.rmtree(building, ignore_errors=True)
    videos = os.path.join(building, 'videos')
    os.makedirs(videos)
    started = time.perf_counter()
    rng = np.random.default_rng(1234)
    rows = []
    for clip in range(sizes['clips']):
        video_id = f'bench{clip:03d}'
        write_video(os.path.join(videos, f'{video_id}.mp4'), clip, sizes)
        rows.append(f'{video_id},0.0,{sizes["clip_seconds"]:.3f},{narration(rng)},bench\n')
    with open(os.path.join(building, 'clips.csv'), 'w', encoding='utf-8') as file:
        file.write('video_id,start_second,end_second,text,dataset\n')
        file.writelines(rows)
    print(f'wrote {sizes["clips"]} videos in {time.perf_counter() - started:.1f} s; converting')
    # Relative paths (run inside the dataset directory) keep the manifest's command valid
    # after the rename.
    command = [sys.executable, '-m', 'egovideo_jax.records', 'convert',
               '--csv', 'clips.csv', '--video-root', 'videos', '--out', 'records',
               '--frames-per-clip', str(sizes['frames_per_clip']),
               '--short-side', str(sizes['short_side']),
               '--workers', str(max(1, min(4, os.cpu_count() or 1))),
               '--max-skip-fraction', '0']
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        filter(None, [repo, os.environ.get('PYTHONPATH')]))}
    subprocess.run(command, check=True, cwd=building, env=env)
    write_json_atomically(os.path.join(building, 'sizes.json'),
                          {'key': json.loads(key), 'convert_command': command[1:],
                           'build_seconds': round(time.perf_counter() - started, 1)})
    try:
        os.rename(building, final)
    except OSError:  # another run finished first
        shutil.rmtree(building, ignore_errors=True)
    return final


def describe_dataset(root: str) -> dict:
    from egovideo_jax.records.dataset import open_dataset
    dataset = open_dataset(os.path.join(root, 'records'))
    record_sizes = np.array([len(dataset.read(i)) for i in range(len(dataset))], np.int64)
    videos = sorted(os.path.join(root, 'videos', name)
                    for name in os.listdir(os.path.join(root, 'videos')))
    video_sizes = np.array([os.path.getsize(path) for path in videos], np.int64)
    manifest = dataset.manifest
    return {
        'directory': root,
        'records': len(dataset),
        'frames_per_clip': manifest['frames_per_clip'],
        'frame_sizes': manifest['frame_sizes'],
        'record_kb_mean': round(record_sizes.mean() / 1e3, 1),
        'jpeg_kb_mean': round(record_sizes.mean() / 1e3 / manifest['frames_per_clip'], 1),
        'records_mb_total': round(record_sizes.sum() / 1e6, 2),
        'mp4_kb_mean': round(video_sizes.mean() / 1e3, 1),
        'mp4_mb_total': round(video_sizes.sum() / 1e6, 2),
        '_record_sizes': record_sizes,
        '_videos': videos,
    }


# ----------------------------------------------------------------------------- measuring

class Meter:
    """Clips, bytes and times after the warm-up; wall and CPU seconds of this process and
    its children (Grain workers) when psutil is available."""

    def __init__(self):
        try:
            import psutil
            self._process = psutil.Process()
        except ImportError:
            self._process = None
        self.clips = 0
        self.bytes = 0

    def _cpu(self) -> float | None:
        if self._process is None:
            return None
        total = sum(self._process.cpu_times()[:2])
        for child in self._process.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except Exception:
                pass
        return total

    def start(self) -> None:
        self.clips, self.bytes = 0, 0
        self._cpu0, self._wall0 = self._cpu(), time.perf_counter()

    def add(self, clips: int, num_bytes: int) -> None:
        self.clips += clips
        self.bytes += num_bytes

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._wall0

    def result(self, **extra) -> dict:
        wall = self.elapsed
        cpu = self._cpu()
        cpu_per_clip = ((cpu - self._cpu0) / self.clips
                        if cpu is not None and self._cpu0 is not None and self.clips else None)
        return {**extra, 'clips': self.clips, 'seconds': round(wall, 2),
                'clips_per_s': round(self.clips / wall, 2),
                'mb_per_s': round(self.bytes / 1e6 / wall, 2),
                'cpu_s_per_clip': None if cpu_per_clip is None else round(cpu_per_clip, 4)}


def bench_records(records_dir: str, record_sizes: np.ndarray, workers: int, args,
                  sizes: dict) -> dict:
    from egovideo_jax.input.config import DataConfig
    from egovideo_jax.input.pipeline import input_stats, make_iterator
    config = DataConfig(path=records_dir, batch_size=sizes['batch_size'], num_frames=NUM_FRAMES,
                        fast_frames=FAST_FRAMES, mode='slowfast', crop_size=sizes['crop'],
                        text_field='narration', worker_count=workers,
                        read_threads=args.read_threads, seed=args.seed)
    meter = Meter()
    opened = time.perf_counter()
    iterator = make_iterator(config, train=True)
    try:
        for _ in range(sizes['warmup']):
            batch = next(iterator)
        first_batches_s = time.perf_counter() - opened
        expected = (sizes['batch_size'], NUM_FRAMES, sizes['crop'], sizes['crop'], 3)
        if batch['slow'].shape != expected or batch['fast'].shape[1] != FAST_FRAMES:
            raise AssertionError(f'unexpected batch shapes {batch["slow"].shape}, '
                                 f'{batch["fast"].shape}')
        meter.start()
        while meter.elapsed < sizes['seconds'] and meter.clips < sizes['max_clips']:
            batch = next(iterator)
            meter.add(len(batch['index']), int(record_sizes[np.asarray(batch['index'])].sum()))
        result = meter.result(name=f'records w={workers}', source='records',
                              worker_count=workers, read_threads=args.read_threads,
                              warmup_s=round(first_batches_s, 2))
        result['skipped'] = input_stats(iterator).skipped
        return result
    finally:
        iterator.close()


def mp4_train_example(path: str, text: str, rng: np.random.Generator, crop: int,
                      tokenizer) -> dict:
    """What a training example costs when cut straight from the mp4 (the reference's way):
    train-sampled indices over the whole video, one decode pass, a random resized crop per
    branch, one flip, normalisation, tokens."""
    from egovideo_jax.input import augment
    from egovideo_jax.media import sampling, transforms, video
    num_frames, _ = video.video_info(path)
    branches = {'slow': sampling.sample_train(0, num_frames, NUM_FRAMES, rng),
                'fast': sampling.sample_train(0, num_frames, FAST_FRAMES, rng)}
    needed = np.unique(np.concatenate(list(branches.values())))
    decoded = video.read_frames(path, needed)
    flip = rng.random() < 0.5
    example = {}
    for name, positions in branches.items():
        frames = augment.random_resized_crop(decoded[np.searchsorted(needed, positions)],
                                             crop, rng)
        example[name] = transforms.normalize(augment.hflip(frames) if flip else frames)
    example['tokens'] = tokenizer(text)[0]
    return example


def bench_mp4(videos: list[str], texts: dict, mode: str, args, sizes: dict) -> dict:
    from egovideo_jax.media import video
    from egovideo_jax.model.tokenizer import get_tokenizer
    tokenizer = get_tokenizer('clip')
    crop = sizes['crop']
    order = np.random.default_rng(args.seed).permutation(len(videos))
    meter = Meter()

    def one(step: int) -> int:
        path = videos[order[step % len(videos)]]
        if mode == 'train':
            rng = np.random.default_rng([args.seed, step])
            example = mp4_train_example(path, texts[path], rng, crop, tokenizer)
        else:
            slow, fast = video.load_clips(path, [NUM_FRAMES, FAST_FRAMES], crop)
            example = {'slow': slow, 'fast': fast, 'tokens': tokenizer(texts[path])[0]}
        assert example['slow'].shape == (NUM_FRAMES, crop, crop, 3)
        return os.path.getsize(path)

    opened = time.perf_counter()
    for step in range(sizes['warmup']):
        one(step)
    warmup_s = time.perf_counter() - opened
    meter.start()
    step = sizes['warmup']
    while meter.elapsed < sizes['seconds'] and meter.clips < sizes['max_clips']:
        meter.add(1, one(step))
        step += 1
    return meter.result(name=f'mp4 {mode}', source='mp4',
                        path=('PyAV decode + train sampling/augmentation' if mode == 'train'
                              else 'egovideo_jax.media.video.load_clips (eval)'),
                        worker_count=None, read_threads=None, warmup_s=round(warmup_s, 2))


# ----------------------------------------------------------------------------- main

def print_table(results: list[dict]) -> None:
    print(f'\n{"setting":<16} {"clips":>6} {"s":>6} {"clips/s":>8} {"MB/s":>7} '
          f'{"CPU s/clip":>10} {"warm-up s":>9}')
    for r in results:
        cpu = '-' if r['cpu_s_per_clip'] is None else f'{r["cpu_s_per_clip"]:.3f}'
        print(f'{r["name"]:<16} {r["clips"]:>6} {r["seconds"]:>6.1f} {r["clips_per_s"]:>8.1f} '
              f'{r["mb_per_s"]:>7.2f} {cpu:>10} {r["warmup_s"]:>9.1f}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 2)[2])
    parser.add_argument('--out', default=os.path.join('benchmarks', 'results', 'loader.json'))
    parser.add_argument('--cache-dir', default='/tmp', help='where the dataset is built once')
    parser.add_argument('--quick', action='store_true',
                        help='tiny dataset and crops, ~2 s per setting (tests)')
    parser.add_argument('--seconds', type=float, help='measured seconds per setting '
                        f'(default {FULL["seconds"]:g}; quick {QUICK["seconds"]:g})')
    parser.add_argument('--max-clips', type=int, help='stop a setting after this many clips '
                        f'(default {FULL["max_clips"]})')
    parser.add_argument('--clips', type=int, help=f'synthetic videos (default {FULL["clips"]})')
    parser.add_argument('--batch-size', type=int, help=f'default {FULL["batch_size"]}')
    parser.add_argument('--workers', default='0,1,2',
                        help='comma-separated worker_count values to measure')
    parser.add_argument('--read-threads', type=int, default=4,
                        help='DataConfig.read_threads (decoding threads per process)')
    parser.add_argument('--skip-mp4', action='store_true', help='measure records only')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key, value in (('seconds', args.seconds), ('max_clips', args.max_clips),
                       ('clips', args.clips), ('batch_size', args.batch_size)):
        if value is not None:
            sizes[key] = value
    workers = [int(value) for value in args.workers.split(',') if value.strip()]

    root = build_dataset(args.cache_dir, sizes)
    dataset = describe_dataset(root)
    record_sizes, videos = dataset.pop('_record_sizes'), dataset.pop('_videos')
    with open(os.path.join(root, 'clips.csv'), encoding='utf-8') as file:
        rows = [line.rstrip('\n').split(',') for line in file][1:]
    texts = {os.path.join(root, 'videos', f'{row[0]}.mp4'): row[3] for row in rows}

    load_before = os.getloadavg()
    results = []
    for count in workers:
        print(f'measuring records, worker_count={count} ...', flush=True)
        results.append(bench_records(os.path.join(root, 'records'), record_sizes, count, args,
                                     sizes))
    if not args.skip_mp4:
        for mode in ('train', 'load_clips'):
            print(f'measuring mp4 {mode} ...', flush=True)
            results.append(bench_mp4(videos, texts, mode, args, sizes))
    print_table(results)

    report = {
        'benchmark': 'loader',
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'command': ' '.join(['python', 'benchmarks/loader.py', *(argv if argv is not None
                                                                  else sys.argv[1:])]),
        'quick': args.quick,
        'machine': {**machine(PACKAGES), 'load_average_1m_before': round(load_before[0], 2),
                    'load_average_1m_after': round(os.getloadavg()[0], 2)},
        'sizes': {**sizes, 'num_frames': NUM_FRAMES, 'fast_frames': FAST_FRAMES,
                  'read_threads': args.read_threads},
        'dataset': dataset,
        'settings': results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_results(args.out, report)
    return 0


if __name__ == '__main__':  # Grain worker processes import this module: keep the guard
    sys.exit(main())
