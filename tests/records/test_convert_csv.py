"""CSV + mp4 -> records (whole and chunked videos, skipped rows) and the
`python -m egovideo_jax.records` commands."""
import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from egovideo_jax.records import schema
from egovideo_jax.records.convert_csv import convert_csv
from egovideo_jax.records.dataset import open_dataset

FPS, WIDTH, HEIGHT = 10, 64, 48
LEVEL_STEP = 5  # video frame k (global index) is solid grey 5 * k
TOLERANCE = 4  # lossless video, then bicubic resize and JPEG
CHUNK_SECONDS = 2
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CSV_ROWS = [
    ['video_id', 'start_second', 'end_second', 'text', 'dataset'],
    ['vid_a', '0.5', '1.3', '#C C opens the door', 'ego4d'],
    ['vid_b', '1.5', '2.5', '#C C crosses a chunk boundary', ''],
    ['vid_a', '2.5', '3.5', '#C C runs past the end', 'ego4d'],
    ['vid_b', '3.5', '4.5', '#C C runs past the last chunk', 'ego4d'],
    ['vid_missing', '0', '1', '#C C is nowhere', 'ego4d'],
    ['vid_a', '2.0', '1.0', '#C C goes back in time', 'ego4d'],
    ['vid_a', '10', '11', '#C C starts after the end', 'ego4d'],
    ['vid_a', 'oops'],
    ['vid_corrupt', '0', '1', '#C C reads garbage', 'ego4d'],
]
# Frames nearest to the 4 segment centres of each converted clip (global frame index).
EXPECTED_FRAMES = {
    'vid_a': [6, 8, 10, 12],
    'vid_b': [16, 19, 21, 24],  # 2.125 s and 2.375 s come from chunk 1
    'past_end': [26, 29, 29, 29],
    'past_last_chunk': [36, 39, 39, 39],
}
SKIPS = {6: 'missing video', 7: 'bad times', 8: 'bad times', 9: 'malformed row',
         10: 'decode failure'}


def write_grey_video(path, first_frame, num_frames):
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('libx264', rate=FPS, options={'qp': '0'})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
        for index in range(first_frame, first_frame + num_frames):
            pixels = np.full((HEIGHT, WIDTH, 3), LEVEL_STEP * index, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format='rgb24')))
        container.mux(stream.encode())


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """3 s whole video `vid_a`; `vid_b` as two 2 s chunks (4 s); a garbage `vid_corrupt`;
    the CSV above."""
    root = tmp_path_factory.mktemp('inputs')
    videos = root / 'videos'
    (videos / 'vid_b').mkdir(parents=True)
    write_grey_video(videos / 'vid_a.mp4', 0, 3 * FPS)
    (videos / 'vid_corrupt.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + b'garbage' * 50)
    for chunk in range(2):
        write_grey_video(videos / 'vid_b' / f'{chunk}.mp4', chunk * CHUNK_SECONDS * FPS,
                         CHUNK_SECONDS * FPS)
    with open(root / 'clips.csv', 'w', newline='') as file:
        csv.writer(file).writerows(CSV_ROWS)
    return root / 'clips.csv', videos


def grey_levels(frames):
    levels = frames.astype(np.float64).mean(axis=(1, 2, 3))
    assert np.all(np.abs(frames - levels[:, None, None, None]) <= TOLERANCE)
    return levels


def check_clip(clip, expected_frames):
    frames = schema.decode_frames(clip)
    assert frames.shape == (4, 24, 32, 3)  # short side 48 -> 24
    np.testing.assert_allclose(grey_levels(frames), LEVEL_STEP * np.array(expected_frames),
                               atol=TOLERANCE)
    np.testing.assert_allclose(clip['frame_times'], np.array(expected_frames) / FPS, atol=1e-4)
    assert clip['hod'] == []
    assert not any(valid.any() for valid in clip['box_valid'].values())


@pytest.mark.parametrize('workers', [1, 2])
def test_convert_whole_and_chunked_videos(inputs, tmp_path, workers):
    csv_path, videos = inputs
    summary = convert_csv(csv_path, videos, tmp_path, frames_per_clip=4, short_side=24,
                          chunk_seconds=CHUNK_SECONDS, records_per_shard=3, workers=workers,
                          producer={'command': 'test'}, progress=False)
    assert (summary.num_rows, summary.num_clips) == (9, 4)
    assert summary.skip_counts() == {'bad times': 2, 'missing video': 1, 'malformed row': 1,
                                     'decode failure': 1}
    with open(tmp_path / 'skipped.csv', newline='') as file:
        skipped = list(csv.DictReader(file))
    assert {int(row['line']): row['reason'] for row in skipped} == SKIPS
    assert 'vid_missing' in next(row['detail'] for row in skipped if row['line'] == '6')
    assert 'after the last frame' in next(row['detail'] for row in skipped if row['line'] == '8')
    assert 'vid_corrupt.mp4' in next(row['detail'] for row in skipped if row['line'] == '10')

    dataset = open_dataset(tmp_path)
    assert len(dataset) == 4 and len(dataset.shards) == 2
    manifest = dataset.manifest
    assert manifest['frames_per_clip'] == 4 and manifest['frame_sizes'] == [[24, 32]]
    assert manifest['fps'] == FPS and manifest['narration_fields'] == ['text/narration']
    clips = [dataset.decode(index) for index in range(4)]
    assert clips[0]['clip_id'] == 'vid_a:0.500-1.300#2'
    assert (clips[0]['source'], clips[1]['source']) == ('ego4d', 'csv')
    assert clips[1]['narration'] == '#C C crosses a chunk boundary'
    assert (clips[1]['start'], clips[1]['end']) == (1.5, 2.5)
    for clip, expected in zip(clips, EXPECTED_FRAMES.values()):
        check_clip(clip, expected)
    assert dataset.verify() == []


def run_records(*args):
    return subprocess.run([sys.executable, '-m', 'egovideo_jax.records', *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_convert_and_inspect_commands(inputs, tmp_path):
    csv_path, videos = inputs
    headerless = tmp_path / 'headerless.csv'
    headerless.write_text(''.join(line + '\n' for line in csv_path.read_text().splitlines()[1:]))
    out = tmp_path / 'records'
    common = ['--csv', headerless, '--video-root', videos, '--frames-per-clip', 4,
              '--short-side', 24, '--chunk-seconds', CHUNK_SECONDS, '--format', 'arrayrecord']
    result = run_records('convert', *common, '--out', out)
    assert result.returncode == 1, result.stderr  # 5 of 9 skipped > the default 5%
    assert 'skipped 5 of 9 rows (55.6%)' in result.stdout
    assert 'exceeds --max-skip-fraction 0.05' in result.stderr
    assert 'clip/s' in result.stderr  # the tqdm bar shows throughput

    out = tmp_path / 'records_ok'
    result = run_records('convert', *common, '--out', out, '--max-skip-fraction', 0.6)
    assert result.returncode == 0, result.stderr
    assert 'wrote 4 clips in 1 shards' in result.stdout and 'missing video: 1' in result.stdout
    with open(out / 'manifest.json') as file:
        manifest = json.load(file)
    assert manifest['format'] == 'arrayrecord'
    assert manifest['producer']['command'].startswith('python -m egovideo_jax.records convert')
    assert manifest['producer']['config']['frames_per_clip'] == 4

    result = run_records('inspect', out, '--verify')
    assert result.returncode == 0, result.stderr
    assert '4 records in 1 shards' in result.stdout
    assert 'clips-00000-of-00001.array_record  4 records' in result.stdout
    assert 'clip vid_a:0.500-1.300#1' in result.stdout
    assert "narration: '#C C opens the door'" in result.stdout
    assert '4 x 24x32 (HxW)' in result.stdout and 'boxes/object: absent: 4' in result.stdout
    assert 'verify: OK' in result.stdout


def test_inspect_verify_fails_on_corruption(tmp_path):
    from tests.helpers.clips import write_dataset

    write_dataset(tmp_path)
    shard = tmp_path / 'clips-00002-of-00003.tfrecord'
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_records('inspect', tmp_path, '--verify')
    assert result.returncode == 1
    assert f'{shard}: record 0: data CRC mismatch' in result.stdout
    assert 'verify: 2 problems' in result.stdout  # and the sha256

    result = run_records('inspect', tmp_path / 'missing')
    assert result.returncode == 1 and 'does not exist' in result.stderr
