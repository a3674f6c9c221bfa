"""The Beam pipeline (DirectRunner) writes the same records, CSV and report counts as the
in-process runner on the same input. Skipped when apache-beam is not installed."""
import os

import numpy as np
import pytest

pytest.importorskip('apache_beam')

from egovideo_jax.demo.source import write_demo_source
from egovideo_jax.hod import beam, pipeline
from egovideo_jax.hod.options import PipelineOptions
from egovideo_jax.hod.outputs import CSV_NAME
from egovideo_jax.records import open_dataset, verify_dataset

NUM_CLIPS = 7


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp('source')
    info = write_demo_source(root, NUM_CLIPS, seed=1, split='heldout', size=64)
    table = root / 'table.csv'
    table.write_text((root / 'narrations.csv').read_text()
                     + 'missing_video,0.0,2.0,#C C takes the cup,demo\nonly,two\n')
    options = PipelineOptions(video_root=os.fspath(info.videos_dir),
                              detection_root=os.fspath(info.detections_dir),
                              frames_per_clip=6, short_side=64)
    return table, options


def decoded(records_dir):
    dataset = open_dataset(records_dir)
    return sorted((dataset.decode(index) for index in range(len(dataset))),
                  key=lambda clip: clip['clip_id'])


@pytest.fixture(scope='module')
def runs(source, tmp_path_factory):
    """The same input through both runners: (directory, local report, beam report)."""
    table, options = source
    root = tmp_path_factory.mktemp('runs')
    local = pipeline.run_pipeline(table, root / 'local', options, records_per_shard=3,
                                  progress=False)
    distributed = beam.run_beam(table, root / 'beam', options, records_per_shard=3)
    return root, local, distributed


def test_beam_writes_what_the_in_process_runner_writes(runs):
    tmp_path, local, distributed = runs

    assert verify_dataset(tmp_path / 'beam' / 'records') == []
    local_clips, beam_clips = decoded(tmp_path / 'local' / 'records'), decoded(
        tmp_path / 'beam' / 'records')
    assert len(beam_clips) == NUM_CLIPS
    for ours, theirs in zip(local_clips, beam_clips):
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            if isinstance(value, dict):
                for name in value:
                    assert (value[name] == theirs[key][name]).all(), (ours['clip_id'], key, name)
            elif isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, theirs[key], err_msg=f"{ours['clip_id']} {key}")
            else:
                assert value == theirs[key], (ours['clip_id'], key)
    # The same shards too: input order, three clips per shard.
    manifests = [open_dataset(tmp_path / name / 'records').manifest for name in ('local', 'beam')]
    for key in ('num_records', 'shards', 'frames_per_clip', 'frame_sizes', 'fps',
                'narration_fields'):
        assert manifests[0][key] == manifests[1][key], key
    assert ((tmp_path / 'local' / CSV_NAME).read_text()
            == (tmp_path / 'beam' / CSV_NAME).read_text())

    assert distributed.runner == 'beam' and local.runner == 'inprocess'
    assert distributed.stages == local.stages and distributed.narrator == local.narrator
    assert distributed.skips == local.skips and len(local.skips) == 2


def test_beam_reuses_the_narration_cache(source, runs, tmp_path):
    table, options = source
    assert runs[2].narrator['from_cache'] == 0
    again = beam.run_beam(table, tmp_path, options, cache_dir=runs[0] / 'beam' / 'cache')
    assert again.narrator['from_cache'] == NUM_CLIPS


def test_default_runner_is_the_direct_runner():
    assert beam.with_default_runner([]) == ['--runner=DirectRunner']
    assert beam.with_default_runner(['--runner=FlinkRunner']) == ['--runner=FlinkRunner']
