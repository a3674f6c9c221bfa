"""HOD pipeline: stages, outputs, skips, the narration cache, kill-and-resume, the CLI and the
`demo` config, on small clips of the procedural demo source."""
import ast
import csv
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from egovideo_jax.demo.actions import sample_action_specs
from egovideo_jax.demo.source import write_demo_source, write_video
from egovideo_jax.demo.synthetic import render_clip
from egovideo_jax.hod import clips as hod_clips
from egovideo_jax.hod import pipeline
from egovideo_jax.hod.cache import NarrationCache
from egovideo_jax.hod.detections import FrameDetections
from egovideo_jax.hod.epic_detections import write_epic_pickle
from egovideo_jax.hod.narrators.rules import RulesNarrator
from egovideo_jax.hod.narrators.validated import ValidatedNarrator
from egovideo_jax.hod.options import PipelineOptions
from egovideo_jax.hod.outputs import CSV_NAME
from egovideo_jax.hod.report import read_report
from egovideo_jax.hod.stages import FileDetections
from egovideo_jax.records import open_dataset, verify_dataset

REPO = Path(__file__).resolve().parents[2]
NUM_CLIPS = 10
SIZE = 64  # stored short side: small frames keep the tests fast


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """Demo clips plus rows that must be skipped: a missing video, a malformed row, a clip
    outside its video, empty detections, a corrupt video and missing detections."""
    root = tmp_path_factory.mktemp('source')
    info = write_demo_source(root, NUM_CLIPS, seed=0, split='train', size=128)
    videos, detections = root / 'videos', root / 'detections'
    first = info.video_ids[0]
    shutil.copy(videos / f'{first}.mp4', videos / 'no_hands.mp4')
    write_epic_pickle(detections / 'no_hands.pkl', 'no_hands',
                      [FrameDetections(number) for number in range(1, info.num_frames + 1)])
    (videos / 'corrupt.mp4').write_bytes(b'not an mp4 file' * 100)
    shutil.copy(detections / f'{first}.pkl', detections / 'corrupt.pkl')
    shutil.copy(videos / f'{first}.mp4', videos / 'undetected.mp4')
    table = root / 'table.csv'
    lines = (root / 'narrations.csv').read_text().splitlines()
    lines += ['missing_video,0.0,2.0,#C C takes the cup,demo',
              'only,three fields',
              f'{first},10.0,12.0,#C C takes the cup,demo',
              'no_hands,0.0,3.0,#C C takes the cup,demo',
              'corrupt,0.0,3.0,#C C takes the cup,demo',
              'undetected,0.0,3.0,#C C takes the cup,demo']
    table.write_text('\n'.join(lines) + '\n')
    return {'root': root, 'info': info, 'table': table,
            'options': PipelineOptions(
                video_root=os.fspath(videos), detection_root=os.fspath(detections),
                frames_per_clip=8, short_side=SIZE)}


EXPECTED_SKIPS = {  # video_id -> (stage, reason)
    'missing_video': ('frames', hod_clips.MISSING_VIDEO),
    'only': ('clips', hod_clips.MALFORMED_ROW),
    'demo_train_00000:10': ('frames', hod_clips.CLIP_OUTSIDE_VIDEO),
    'no_hands': ('detections', hod_clips.EMPTY_DETECTIONS),
    'corrupt': ('frames', hod_clips.CORRUPT_VIDEO),
    'undetected': ('detections', hod_clips.MISSING_DETECTIONS),
}


class CountingNarrator:
    """The rules narrator, counting calls; `answer` replaces its text when set."""

    def __init__(self, answer=None, name='counting'):
        self.name, self.model = name, 'v1'
        self.answer = answer
        self.calls = 0
        self.rules = RulesNarrator()

    def narrate(self, narration, tracks, facts):
        self.calls += 1
        return self.answer if self.answer is not None else self.rules.narrate(
            narration, tracks, facts)


def read_csv(path):
    with open(path, newline='') as file:
        return list(csv.reader(file))


@pytest.fixture(scope='module')
def rules_run(source, tmp_path_factory):
    out = tmp_path_factory.mktemp('rules_run')
    report = pipeline.run_pipeline(source['table'], out, source['options'], progress=False)
    return out, report


def test_records_hold_frames_tracks_and_hod_narrations(rules_run, source):
    out, report = rules_run
    dataset = open_dataset(out / 'records')
    assert len(dataset) == NUM_CLIPS == report.clips_written
    assert verify_dataset(out / 'records') == []
    assert dataset.manifest['fps'] == 15.0 and dataset.manifest['frames_per_clip'] == 8
    clips = [dataset.decode(index) for index in range(len(dataset))]
    assert [clip['video_id'] for clip in clips] == list(source['info'].video_ids)  # input order
    for clip in clips:
        assert len(clip['frames_jpeg']) == 8 and clip['source'] == 'demo'
        assert np.all(np.diff(clip['frame_times']) > 0)
        assert clip['narration'].startswith('#C C ')
        assert len(clip['hod']) == 1 and clip['hod'][0] != clip['narration']
        # Every demo clip shows both hands; the object is found in some frame.
        for name in ('left_hand', 'right_hand', 'object'):
            assert (clip['box_valid'][name] != 0).all(), (clip['clip_id'], name)
        boxes = clip['boxes']['right_hand']
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert report.narrator == {'name': 'rules', 'model': 'rules-v1', 'primary': NUM_CLIPS,
                               'fallback': 0, 'from_cache': 0}


def test_csv_is_the_reference_format(rules_run):
    out, _ = rules_run
    rows = read_csv(out / CSV_NAME)
    assert rows[0] == ['video_id', 'start_second', 'end_second', 'text', 'dataset']
    dataset = open_dataset(out / 'records')
    assert len(rows) == 1 + len(dataset)
    for row, index in zip(rows[1:], range(len(dataset))):
        clip = dataset.decode(index)
        video_id, start, end, text, name = row
        assert (video_id, float(start), float(end), name) == (clip['video_id'], 0.0, 3.0, 'demo')
        assert ast.literal_eval(text) == clip['hod']


def test_report_counts_stages_and_names_skipped_clips(rules_run):
    out, report = rules_run
    assert read_report(out).to_json() == report.to_json()
    rows = NUM_CLIPS + len(EXPECTED_SKIPS)
    assert report.rows == rows and report.resumed == 0
    assert report.stages['clips'] == {'in': rows, 'out': rows - 1, 'skipped': 1}
    assert report.stages['frames'] == {'in': rows - 1, 'out': rows - 4, 'skipped': 3}
    assert report.stages['detections'] == {'in': rows - 4, 'out': NUM_CLIPS, 'skipped': 2}
    assert report.stages['records'] == {'in': NUM_CLIPS, 'out': NUM_CLIPS, 'skipped': 0}
    assert len(report.skips) == len(EXPECTED_SKIPS)
    for skip in report.skips:
        key = next(key for key in EXPECTED_SKIPS if skip.clip.startswith(key)
                   or f'({key})' in skip.clip)
        assert (skip.stage, skip.reason) == EXPECTED_SKIPS[key], skip
        assert key.split(':')[0] in skip.message()
    summary = report.summary()
    for reason in (hod_clips.MISSING_VIDEO, hod_clips.EMPTY_DETECTIONS,
                   hod_clips.MALFORMED_ROW):
        assert reason in summary
    assert 'clips/s' in summary and 'missing_video' in summary


def test_cache_and_finished_store_avoid_repeated_narrator_calls(source, tmp_path):
    cache_dir = tmp_path / 'cache'
    first = CountingNarrator()
    report = pipeline.run_pipeline(source['table'], tmp_path / 'a', source['options'], first,
                                   cache_dir=cache_dir, progress=False)
    assert first.calls == NUM_CLIPS and len(NarrationCache(cache_dir)) == NUM_CLIPS
    assert report.narrator['from_cache'] == 0

    again = CountingNarrator()  # a fresh output directory, the same cache
    report = pipeline.run_pipeline(source['table'], tmp_path / 'b', source['options'], again,
                                   cache_dir=cache_dir, progress=False)
    assert again.calls == 0 and report.narrator['from_cache'] == NUM_CLIPS
    assert read_csv(tmp_path / 'a' / CSV_NAME) == read_csv(
        tmp_path / 'b' / CSV_NAME)

    resumed = CountingNarrator()  # the same output directory: nothing is made again
    report = pipeline.run_pipeline(source['table'], tmp_path / 'a', source['options'], resumed,
                                   cache_dir=cache_dir, progress=False)
    assert resumed.calls == 0 and report.resumed == NUM_CLIPS
    assert report.clips_written == NUM_CLIPS
    assert report.stages['frames']['in'] == len(EXPECTED_SKIPS) - 1  # skipped clips retried

    other_model = CountingNarrator(name='other')  # another back-end is asked afresh
    pipeline.run_pipeline(source['table'], tmp_path / 'c', source['options'], other_model,
                          cache_dir=cache_dir, progress=False)
    assert other_model.calls == NUM_CLIPS


def test_restart_with_other_arguments_is_refused(source, tmp_path):
    pipeline.run_pipeline(source['table'], tmp_path, source['options'], CountingNarrator(),
                          progress=False)
    changed = PipelineOptions(**{**source['options'].__dict__, 'frames_per_clip': 4})
    with pytest.raises(ValueError, match='options.frames_per_clip'):
        pipeline.run_pipeline(source['table'], tmp_path, changed, CountingNarrator(),
                              progress=False)


def test_invalid_answers_fall_back_to_rules_and_are_not_cached(source, rules_run, tmp_path):
    garbage = CountingNarrator(answer='!!! ###')
    narrator = ValidatedNarrator(garbage, retries=1)
    report = pipeline.run_pipeline(source['table'], tmp_path, source['options'], narrator,
                                   progress=False)
    assert garbage.calls == 2 * NUM_CLIPS  # first try + one retry per clip
    assert report.narrator['fallback'] == NUM_CLIPS and report.narrator['primary'] == 0
    assert len(NarrationCache(tmp_path / 'cache')) == 0
    assert read_csv(tmp_path / CSV_NAME) == read_csv(rules_run[0] / CSV_NAME)


def test_narrator_failure_skips_only_that_clip(source, tmp_path):
    failing_video = source['info'].video_ids[3]

    class FailsOnOneClip(CountingNarrator):
        def narrate(self, narration, tracks, facts):
            if narration == target_narration:
                raise RuntimeError('the fallback broke too')
            return super().narrate(narration, tracks, facts)

    rows = read_csv(source['root'] / 'narrations.csv')
    target_narration = next(row[3] for row in rows if row[0] == failing_video)
    unique = sum(row[3] == target_narration for row in rows[1:])
    broken = FailsOnOneClip()
    report = pipeline.run_pipeline(
        source['table'], tmp_path, source['options'],
        ValidatedNarrator(broken, fallback=broken, retries=0), progress=False)
    narration_skips = [skip for skip in report.skips if skip.stage == 'narration']
    assert len(narration_skips) == unique >= 1
    assert narration_skips[0].reason == hod_clips.NARRATOR_FAILURE
    assert 'fallback broke' in narration_skips[0].detail
    assert report.clips_written == NUM_CLIPS - unique


def test_epic_annotation_tables_are_read(tmp_path):
    table = tmp_path / 'EPIC_100_train.csv'
    table.write_text(
        'narration_id,participant_id,video_id,narration_timestamp,start_timestamp,'
        'stop_timestamp,start_frame,stop_frame,narration,verb\n'
        'P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open\n'
        'P01_01_1,P01,P01_01,00:00:02.629,00:01:04.22,00:01:05.06,,,turn on light\n'
        'P01_01_2,P01,P01_01,00:00:05.349,00:00:04.37,later,262,370,close door,close\n')
    spec, short_row, bad_time = hod_clips.read_clip_specs(table)
    assert spec.clip_id == 'P01_01:0.140-3.370#2'
    assert (spec.video_id, spec.start, spec.end, spec.narration, spec.source) == (
        'P01_01', 0.14, 3.37, 'open door', 'epic')
    assert (short_row.line, short_row.reason) == (3, hod_clips.MALFORMED_ROW)
    assert bad_time.reason == hod_clips.BAD_TIMES and "'later'" in bad_time.detail


def test_frame_times_map_to_detection_frame_numbers():
    asked = []

    class Source:
        def frames(self, video_id, numbers):
            asked.append(list(numbers))
            return {number: FrameDetections(number) for number in numbers if number != 3}

    times = np.array([0.0, 1 / 15, 2 / 15, 4 / 15], np.float32)
    found = FileDetections(Source())('v', [], times, 15.0)
    assert asked[-1] == [1, 2, 3, 5] and found[2] is None and found[3].frame_number == 5
    FileDetections(Source(), fps=60.0)('v', [], times, 15.0)
    assert asked[-1] == [1, 5, 9, 17]  # detections numbered at 60 fps, video at 15
    with pytest.raises(hod_clips.ClipSkipped, match='frame rate'):
        FileDetections(Source())('v', [], times, 0.0)


def test_live_detector_runs_on_the_stored_frames(source, tmp_path, monkeypatch):
    from egovideo_jax.hod import detectors
    from egovideo_jax.hod.detections import BBox, HandDetection
    seen = []

    class StubDetector:
        """A left hand at the same place in every frame, one weak hand below threshold."""

        def detect(self, frames, frame_numbers=None):
            seen.append((frames.shape, list(frame_numbers)))
            hand = HandDetection(BBox(0.1, 0.5, 0.3, 0.9), 0.9, 0, (0.0, 0.0), 'left')
            weak = HandDetection(BBox(0.6, 0.5, 0.8, 0.9), 0.2, 0, (0.0, 0.0), 'right')
            return [FrameDetections(number, (hand, weak)) for number in frame_numbers]

    monkeypatch.setitem(detectors.FRAME_DETECTORS, 'stub', StubDetector)
    options = PipelineOptions(video_root=source['options'].video_root,
                              detection_source='detector', detector='stub',
                              frames_per_clip=4, short_side=SIZE)
    table = tmp_path / 'table.csv'
    table.write_text(f'{source["info"].video_ids[0]},0.0,3.0,#C C waves\n')
    report = pipeline.run_pipeline(table, tmp_path / 'out', options, progress=False)
    assert report.clips_written == 1 and seen == [((4, SIZE, SIZE, 3), [1, 2, 3, 4])]
    clip = open_dataset(tmp_path / 'out' / 'records').decode(0)
    np.testing.assert_allclose(clip['boxes']['left_hand'], [[0.1, 0.5, 0.3, 0.9]] * 4)
    assert (clip['box_valid']['left_hand'] == 1).all()
    assert (clip['box_valid']['right_hand'] == 0).all()  # below the hand threshold


def test_chunked_store_gives_the_same_clip_as_the_whole_video(tmp_path):
    spec = sample_action_specs(1, seed=3)[0]
    clip = render_clip(spec, seed=3, size=64, fps=15, seconds=2.0)
    whole, chunked, found = tmp_path / 'whole', tmp_path / 'chunked', tmp_path / 'detections'
    for folder in (whole, chunked / 'v', found):
        folder.mkdir(parents=True)
    write_video(whole / 'v.mp4', clip.frames, 15)
    write_video(chunked / 'v' / '0.mp4', clip.frames[:15], 15)  # 1 s chunks
    write_video(chunked / 'v' / '1.mp4', clip.frames[15:], 15)
    write_epic_pickle(found / 'v.pkl', 'v', clip.detections)
    table = tmp_path / 'table.csv'
    table.write_text('v,0.45,1.65,#C C takes the cup\n')  # spans both chunks, no ties
    records = []
    for root in (whole, chunked):
        options = PipelineOptions(video_root=os.fspath(root),
                                  detection_root=os.fspath(found), frames_per_clip=6,
                                  short_side=64, chunk_seconds=1.0)
        pipeline.run_pipeline(table, tmp_path / root.name / 'out', options, progress=False)
        records.append(open_dataset(tmp_path / root.name / 'out' / 'records').decode(0))
    np.testing.assert_allclose(records[0]['frame_times'], records[1]['frame_times'], atol=1e-6)
    assert records[1]['frame_times'][0] < 1.0 < records[1]['frame_times'][-1]
    for name in ('left_hand', 'right_hand', 'object'):
        np.testing.assert_array_equal(records[0]['boxes'][name], records[1]['boxes'][name])
    assert records[0]['hod'] == records[1]['hod'] and records[0]['source'] == 'csv'


# ----------------------------------------------------------------------------- CLI

class FakeChatServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 that counts requests and
    answers slowly, so a run can be killed while it narrates."""
    ANSWER = 'C handles the object on the table carefully.'

    def __init__(self, delay: float):
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers['Content-Length']))
                with server.lock:
                    server.requests += 1
                time.sleep(delay)
                body = json.dumps({'choices': [{'message': {'content': server.ANSWER}}]})
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cli(*overrides, config='configs/hod.py:epic'):
    return [sys.executable, '-m', 'egovideo_jax.hod', f'--config={config}',
            '--config.progress=False', '--config.visualize=0', *overrides]


def test_killed_run_resumes_with_every_clip_exactly_once(source, tmp_path):
    server = FakeChatServer(delay=0.4)
    out = tmp_path / 'out'
    options = source['options']
    command = cli(f'--config.input_csv={source["table"]}',
                  f'--config.video_root={options.video_root}',
                  f'--config.detections.root={options.detection_root}',
                  f'--config.output_dir={out}', '--config.frames_per_clip=8',
                  f'--config.short_side={SIZE}', '--config.narrator.name=openai',
                  f'--config.narrator.base_url={server.url}', '--config.narrator.model=fake',
                  '--config.narrator.concurrency=2', '--config.narrator.api_key_env=')
    try:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        finished_dir = out / 'work' / 'finished'
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            done = len(list(finished_dir.glob('*.clip'))) if finished_dir.exists() else 0
            if 0 < done < NUM_CLIPS:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        finished_at_kill = len(list(finished_dir.glob('*.clip')))
        cached_at_kill = len(NarrationCache(out / 'cache'))
        assert 0 < finished_at_kill < NUM_CLIPS, process.stdout.read().decode()
        assert not (out / 'records').exists()
        requests_before = server.requests

        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.close()
    assert server.requests - requests_before == NUM_CLIPS - cached_at_kill
    assert 'finished by an earlier run' in result.stdout
    report = read_report(out)
    assert report.resumed == finished_at_kill and report.clips_written == NUM_CLIPS
    assert report.narrator['primary'] == NUM_CLIPS
    dataset = open_dataset(out / 'records')
    clip_ids = [dataset.decode(index)['clip_id'] for index in range(len(dataset))]
    assert len(clip_ids) == len(set(clip_ids)) == NUM_CLIPS
    rows = read_csv(out / CSV_NAME)[1:]
    assert sorted(row[0] for row in rows) == sorted(source['info'].video_ids)
    assert all(ast.literal_eval(row[3]) == [FakeChatServer.ANSWER] for row in rows)
    assert verify_dataset(out / 'records') == []


def test_cli_names_the_bad_config_field(tmp_path):
    result = subprocess.run(cli(f'--config.output_dir={tmp_path}', '--config.input_csv=nope.csv'),
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and 'config.input_csv' in result.stderr


def test_demo_config_builds_the_demo_dataset(tmp_path):
    from egovideo_jax.demo import build

    out = tmp_path / 'demo'
    result = subprocess.run(
        cli(f'--config.output_dir={out}', '--config.demo.train_clips=4',
            '--config.demo.heldout_clips=2', '--config.demo.size=64', '--config.visualize=1',
            config='configs/hod.py:demo'),
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('HOD pipeline (inprocess)') == 2
    manifest = json.loads((out / build.DEMO_MANIFEST).read_text())
    for split, count in (('train', 4), ('heldout', 2)):
        dataset = open_dataset(manifest['paths'][split])
        assert len(dataset) == count and verify_dataset(manifest['paths'][split]) == []
        clip = dataset.decode(0)
        assert clip['video_id'].startswith(f'demo_{split}_') and clip['hod']
        # Every rendered frame, each once: the trainer samples the source frames themselves.
        np.testing.assert_allclose(clip['frame_times'], np.arange(45) / 15, atol=1e-4)
        assert os.path.exists(manifest['paths'][f'{split}_actions'])
    assert (out / 'visual' / 'index.html').exists()
    started = time.monotonic()  # built already: returns the paths at once
    assert build.build_demo_dataset(out, 4, 2, 0, size=64) == manifest['paths']
    assert time.monotonic() - started < 1
    with pytest.raises(ValueError, match='train_clips'):
        build.build_demo_dataset(out, 5, 2, 0, size=64)
