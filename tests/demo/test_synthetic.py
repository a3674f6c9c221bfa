"""The procedural egocentric demo source: determinism, ground-truth boxes that match the
pixels, fast-motion pairs that 4 evaluation frames cannot separate but 16 can, left/right
variants, the side (third-person) view of the same scenes, and the written source (mp4 + EPIC
pickles + CSVs) round-tripping."""
import collections
import csv

import numpy as np
import pytest

from egovideo_jax.demo.actions import (
    ACTIONS,
    COLORS,
    FAST_MOTION_PAIRS,
    ActionSpec,
    demo_objects,
    sample_action_specs,
)
from egovideo_jax.demo.finetune import read_actions
from egovideo_jax.demo.source import ACTION_FIELDS, NARRATION_FIELDS, clip_seed, write_demo_source
from egovideo_jax.demo.synthetic import NOISE_SIGMA, VIEWS, render_clip
from egovideo_jax.hod.detections import PORTABLE_OBJECT
from egovideo_jax.hod.epic_detections import read_epic_pickle
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.video import read_frames, video_info

SIZE, NUM_FRAMES = 144, 45  # render_clip's defaults: 144 px, 3 s at 15 fps


def render(action, hand='right', color='red', kind='cup', direction=None, seed=0, **options):
    return render_clip(ActionSpec(action, hand, color, kind, direction), seed, **options)


def pixel_box(bbox, size):
    return (int(bbox.left * size), int(bbox.top * size), int(np.ceil(bbox.right * size)),
            int(np.ceil(bbox.bottom * size)))


def test_shapes_and_narration():
    clip = render('pick_up', color='blue', kind='bottle')
    assert clip.frames.shape == (NUM_FRAMES, SIZE, SIZE, 3) and clip.frames.dtype == np.uint8
    assert [frame.frame_number for frame in clip.detections] == list(range(1, NUM_FRAMES + 1))
    assert clip.narration == '#C C picks up the blue bottle'
    assert (clip.action, clip.hand, clip.object, clip.fps) == ('pick_up', 'right', 'blue bottle',
                                                                15.0)
    assert not clip.fast_motion_only
    small = render('reach', size=128, fps=10, seconds=2.0)
    assert small.frames.shape == (20, 128, 128, 3)


def test_narrations_name_the_object_not_the_hand():
    for spec in sample_action_specs(60, seed=1):
        assert spec.narration.startswith('#C C ') and spec.object in spec.narration
        assert 'hand' not in spec.narration.replace('the other hand', '')
    assert ActionSpec('move', 'left', 'green', 'box', 'up').narration == (
        '#C C moves the green box forward')
    assert ActionSpec('back_and_forth', 'left', 'yellow', 'ball', 'right').narration == (
        '#C C moves the yellow ball back and forth')


def test_same_seed_same_clip_other_seed_other_clip():
    first, again = render('shake', seed=5), render('shake', seed=5)
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.detections == again.detections
    other = render('shake', seed=6)
    assert np.abs(first.frames.astype(int) - other.frames).mean() > 5
    assert first.detections != other.detections


@pytest.mark.parametrize('action, hand, direction, seed', [
    ('pick_up', 'left', None, 0), ('hand_over', 'right', None, 1), ('push', 'left', 'up', 2),
    ('back_and_forth', 'right', 'left', 3), ('rotate', 'left', 'clockwise', 4)])
def test_boxes_cover_the_rendered_hands_and_objects(action, hand, direction, seed):
    clip = render(action, hand, 'orange', 'sponge', direction, seed=seed, miss_rate=0.0)
    colors = [COLORS[obj.color] for obj in clip.scene.objects]  # the target first
    visible = np.zeros(len(colors))  # best fraction of each box in the object's colour
    for frame, detections in list(zip(clip.frames, clip.detections))[::4]:
        frame = frame.astype(np.float64)
        assert len(detections.objects) == len(colors)
        for index, (obj, color) in enumerate(zip(detections.objects, colors)):
            left, top, right, bottom = pixel_box(obj.bbox, SIZE)
            colored = np.linalg.norm(frame - color, axis=-1) < 60
            visible[index] = max(visible[index], colored[top:bottom, left:right].mean())
            # Nothing else in the frame has the object's colour: its pixels are in its box.
            assert colored[top:bottom, left:right].sum() >= 0.5 * colored.sum()
            if index:
                assert obj.score < detections.objects[0].score
        table = np.median(frame.reshape(-1, 3), axis=0)
        skin_like = (np.linalg.norm(frame - clip.scene.skin, axis=-1) <
                     np.linalg.norm(frame - table, axis=-1))
        assert {hand.side for hand in detections.hands} == {'left', 'right'}
        for detected in detections.hands:
            left, top, right, bottom = pixel_box(detected.bbox, SIZE)
            assert skin_like[top:bottom, left:right].mean() > 0.35
            assert 0.9 <= detected.score <= 1.0
    assert skin_like[:20].mean() < 0.05  # the top of the last frame: table and objects only
    assert visible.min() > 0.1  # (an arm may hide an object for a while: boxes are amodal)


def test_contact_state_and_object_offset_point_at_the_held_object():
    clip = render('pick_up', 'left', miss_rate=0.0)
    states = [{hand.side: hand.state for hand in frame.hands} for frame in clip.detections]
    assert states[0] == {'left': 0, 'right': 0}
    assert states[-1] == {'left': PORTABLE_OBJECT, 'right': 0}
    last = clip.detections[-1]
    holder = next(hand for hand in last.hands if hand.side == 'left')
    target = last.objects[0]
    np.testing.assert_allclose(np.add(holder.bbox.center, holder.object_offset),
                               target.bbox.center, atol=1e-6)


def test_detections_are_missed_at_the_configured_rate():
    counts = [len(frame.hands) + len(frame.objects)
              for frame in render('hold', seed=2, miss_rate=0.0).detections]
    missed = [len(frame.hands) + len(frame.objects)
              for frame in render('hold', seed=2, miss_rate=0.3).detections]
    assert len(set(counts)) == 1
    rate = 1 - sum(missed) / sum(counts)
    assert 0.15 < rate < 0.45


def frame_distance(a, b, indices):
    return np.abs(a.frames[indices].astype(np.float64) - b.frames[indices]).mean()


@pytest.mark.parametrize('fast, slow, direction', [('shake', 'hold', None),
                                                   ('back_and_forth', 'move_and_back', 'right'),
                                                   ('back_and_forth', 'move_and_back', 'up')])
@pytest.mark.parametrize('hand', ['left', 'right'])
def test_fast_motion_pairs_need_more_than_four_frames(fast, slow, direction, hand):
    """Rendered with the same seed, the pair shows the same 4 evaluation frames; 16 frames
    see the fast motion."""
    fast_clip = render(fast, hand, 'green', 'bottle', direction, seed=7)
    slow_clip = render(slow, hand, 'green', 'bottle', direction, seed=7)
    four = frame_distance(fast_clip, slow_clip, sample_eval(0, NUM_FRAMES, 4))
    sixteen = frame_distance(fast_clip, slow_clip, sample_eval(0, NUM_FRAMES, 16))
    assert sixteen > 1.0
    assert four < 0.05 * sixteen
    # Same start and end.
    np.testing.assert_array_equal(fast_clip.frames[[0, -1]], slow_clip.frames[[0, -1]])
    assert fast_clip.fast_motion_only and slow_clip.fast_motion_only


def test_fast_motion_registry():
    for fast, slow in FAST_MOTION_PAIRS:
        assert ACTIONS[fast].fast_motion_partner == slow
        assert ACTIONS[slow].fast_motion_partner == fast
        assert ACTIONS[fast].directions == ACTIONS[slow].directions
    paired = {name for pair in FAST_MOTION_PAIRS for name in pair}
    assert {name for name, action in ACTIONS.items() if action.fast_motion_only} == paired


def active_hand_travel(clip, side):
    centers = [np.array(hand.bbox.center) for frame in clip.detections for hand in frame.hands
               if hand.side == side]
    return np.linalg.norm(centers[-1] - centers[0])


@pytest.mark.parametrize('action', ['pick_up', 'push'])
def test_left_and_right_variants_move_that_hand(action):
    direction = 'up' if action == 'push' else None
    for hand, other in (('left', 'right'), ('right', 'left')):
        clip = render(action, hand, direction=direction, seed=3, miss_rate=0.0)
        assert active_hand_travel(clip, hand) > 0.15
        assert active_hand_travel(clip, other) < 0.05
        first = {detected.side: detected for detected in clip.detections[0].hands}
        assert first['left'].bbox.center[0] < 0.5 < first['right'].bbox.center[0]
        contact = {detected.side for detected in clip.detections[-1].hands
                   if detected.state == PORTABLE_OBJECT}
        assert contact == {hand}


def test_hand_over_passes_the_object_to_the_other_hand():
    clip = render('hand_over', 'left', miss_rate=0.0)
    holders = [{hand.side for hand in frame.hands if hand.state == PORTABLE_OBJECT}
               for frame in clip.detections]
    assert holders[0] == {'left'} and holders[-1] == {'right'}
    assert {'left', 'right'} in holders  # both hold it during the hand-over
    x_start, x_end = (clip.detections[t].objects[0].bbox.center[0] for t in (0, -1))
    assert x_start < 0.4 < 0.6 < x_end


def test_sample_action_specs_is_balanced_and_deterministic():
    specs = sample_action_specs(220, seed=3)
    assert specs == sample_action_specs(220, seed=3)
    assert specs != sample_action_specs(220, seed=4)
    assert specs[:50] == sample_action_specs(50, seed=3)  # growing a set keeps its clips
    assert set(collections.Counter(spec.action for spec in specs).values()) == {20}
    for name in ACTIONS:
        hands = collections.Counter(spec.hand for spec in specs if spec.action == name)
        assert hands['left'] == hands['right'] == 10
        directions = collections.Counter(spec.direction for spec in specs if spec.action == name)
        assert max(directions.values()) - min(directions.values()) <= 2
    objects = collections.Counter(spec.object for spec in specs)
    assert len(objects) == 30 and max(objects.values()) - min(objects.values()) <= 1


def test_a_smaller_object_vocabulary():
    first_five = demo_objects(5)
    assert len({color for color, _ in first_five}) == len({kind for _, kind in first_five}) == 5
    assert sorted(demo_objects(30)) == sorted(demo_objects(0))  # every object, once
    specs = sample_action_specs(66, seed=1, num_objects=2)
    assert collections.Counter(spec.object for spec in specs) == {
        f'{color} {kind}': 33 for color, kind in demo_objects(2)}
    assert set(collections.Counter(spec.action for spec in specs).values()) == {6}
    with pytest.raises(ValueError, match='num_objects'):
        demo_objects(31)


def test_invalid_specs_are_refused():
    with pytest.raises(ValueError, match='action'):
        ActionSpec('juggle', 'left', 'red', 'cup')
    with pytest.raises(ValueError, match='direction'):
        ActionSpec('move', 'left', 'red', 'cup')
    with pytest.raises(ValueError, match='direction'):
        ActionSpec('hold', 'left', 'red', 'cup', 'left')
    with pytest.raises(ValueError, match='hand'):
        ActionSpec('hold', 'both', 'red', 'cup')
    with pytest.raises(ValueError, match='size'):
        render('hold', size=145)


def test_splits_never_share_a_seed():
    train = {clip_seed(0, 'train', index) for index in range(500)}
    heldout = {clip_seed(0, 'heldout', index) for index in range(500)}
    assert len(train) == len(heldout) == 500 and not train & heldout


def test_ego_is_the_default_view():
    default = render('shake', seed=5, size=64, seconds=1.0)
    ego = render('shake', seed=5, size=64, seconds=1.0, view='ego')
    np.testing.assert_array_equal(default.frames, ego.frames)
    assert default.detections == ego.detections
    assert default.view == ego.view == 'ego' and VIEWS == ('ego', 'side')
    with pytest.raises(ValueError, match=r"view='top'; choose from \['ego', 'side'\]"):
        render('shake', view='top')


def side_and_ego(action='push', hand='left', color='orange', kind='sponge', direction='up',
                 seed=2, **options):
    options = dict(size=96, seconds=2.0, miss_rate=0.0) | options
    return (render(action, hand, color, kind, direction, seed, view='side', **options),
            render(action, hand, color, kind, direction, seed, **options))


def test_side_view_is_deterministic_and_shows_the_same_scene():
    side, ego = side_and_ego('pick_up', 'right', 'red', 'cup', None, seed=4, miss_rate=0.3)
    again = render('pick_up', 'right', 'red', 'cup', seed=4, size=96, seconds=2.0,
                   miss_rate=0.3, view='side')
    np.testing.assert_array_equal(side.frames, again.frames)
    assert side.detections == again.detections
    assert side.view == 'side' and side.scene == ego.scene and side.spec == ego.spec
    assert np.abs(side.frames.astype(np.float64) - ego.frames).mean() > 30
    # The same detector draws: the same objects missed, with the same scores.
    for side_frame, ego_frame in zip(side.detections, ego.detections):
        assert ([obj.score for obj in side_frame.objects] ==
                [obj.score for obj in ego_frame.objects])


def test_side_view_sees_the_room_from_a_static_camera():
    side, ego = side_and_ego(seed=3, seconds=1.0)
    top = side.frames[:, :side.frames.shape[1] // 10].astype(np.float64)  # above the head
    table = np.median(ego.frames.reshape(-1, 3), axis=0)
    assert np.linalg.norm(top.mean(axis=(0, 1, 2)) - table) > 60  # the wall, not the table
    # No sway and a fixed exposure: over time the wall varies by the sensor noise only.
    assert top.std(axis=0).mean() < 1.1 * NOISE_SIGMA


def test_side_view_boxes_follow_the_projected_scene():
    side, ego = side_and_ego()
    size = side.frames.shape[1]
    color = COLORS['orange']
    for frame, detections, ego_detections in list(zip(side.frames, side.detections,
                                                      ego.detections))[::5]:
        assert len(detections.objects) == len(ego_detections.objects) == len(side.scene.objects)
        assert {hand.side for hand in detections.hands} == {'left', 'right'}
        for detected in detections.hands + detections.objects:
            assert all(0 <= value <= 1 for value in detected.bbox.as_list())
        left, top, right, bottom = pixel_box(detections.objects[0].bbox, size)
        colored = np.linalg.norm(frame.astype(np.float64) - color, axis=-1) < 60
        assert colored[top:bottom, left:right].sum() >= 0.8 * colored.sum() > 0
    # The camera faces the person: their left hand (at rest) is on the frame's right.
    first = {hand.side: hand.bbox.center[0] for hand in side.detections[0].hands}
    assert first['right'] < 0.5 < first['left']
    # Pushed away from the person: up in the ego view, towards the side camera (down) here.
    ego_start, ego_end = (ego.detections[t].objects[0].bbox.center for t in (0, -1))
    side_start, side_end = (side.detections[t].objects[0].bbox.center for t in (0, -1))
    assert ego_end[1] < ego_start[1] - 0.1 and side_end[1] > side_start[1] + 0.05


def test_written_source_round_trips(tmp_path):
    info = write_demo_source(tmp_path, num_clips=3, seed=11, split='heldout', size=128,
                             seconds=2.0)
    assert info.video_ids == ('demo_heldout_00000', 'demo_heldout_00001', 'demo_heldout_00002')
    assert (info.num_frames, info.fps, info.size) == (30, 15.0, 128)
    with open(info.narrations_csv, newline='') as file:
        narrations = list(csv.DictReader(file))
    with open(info.actions_csv, newline='') as file:
        actions = list(csv.DictReader(file))
    assert list(narrations[0]) == list(NARRATION_FIELDS)
    assert list(actions[0]) == list(ACTION_FIELDS)
    assert [row['video_id'] for row in narrations] == list(info.video_ids)
    for narration, action in zip(narrations, actions):
        video_id = narration['video_id']
        assert (float(narration['start_second']), float(narration['end_second'])) == (0.0, 2.0)
        assert narration['dataset'] == 'demo' and narration['text'].startswith('#C C ')
        spec = ActionSpec(action['action'], action['hand'], *action['object'].split(),
                          action['direction'] or None)
        assert narration['text'] == spec.narration
        assert action['fast_motion_only'] == str(int(spec.fast_motion_only))
        assert action['view'] == 'ego'
        clip = render_clip(spec, int(action['seed']), size=128, seconds=2.0)

        video = info.videos_dir / f'{video_id}.mp4'
        assert video_info(video) == (30, 15.0)
        decoded = read_frames(video, [0, 17, 29])
        assert np.abs(decoded.astype(np.float64) - clip.frames[[0, 17, 29]]).mean() < 4

        stored = read_epic_pickle(info.detections_dir / f'{video_id}.pkl')
        assert [frame.frame_number for frame in stored] == list(range(1, 31))
        for read, rendered in zip(stored, clip.detections):
            assert [hand.side for hand in read.hands] == [hand.side for hand in rendered.hands]
            assert [hand.state for hand in read.hands] == [hand.state for hand in rendered.hands]
            np.testing.assert_allclose(
                [box.bbox.as_list() for box in read.hands + read.objects],
                [box.bbox.as_list() for box in rendered.hands + rendered.objects], atol=1e-6)


def test_worker_processes_write_the_same_source(tmp_path):
    serial = write_demo_source(tmp_path / 'serial', num_clips=2, seed=4, split='train',
                               size=128, seconds=1.0)
    parallel = write_demo_source(tmp_path / 'parallel', num_clips=2, seed=4, split='train',
                                 size=128, seconds=1.0, workers=2)
    for name in ('narrations.csv', 'actions.csv'):
        assert (serial.root / name).read_text() == (parallel.root / name).read_text()
    for video_id in serial.video_ids:
        assert (read_epic_pickle(serial.detections_dir / f'{video_id}.pkl') ==
                read_epic_pickle(parallel.detections_dir / f'{video_id}.pkl'))


def test_a_side_view_source_shows_the_same_scenes(tmp_path):
    side = write_demo_source(tmp_path / 'side', num_clips=2, seed=4, split='train', size=64,
                             seconds=1.0, view='side')
    assert side.video_ids == ('demo_train_side_00000', 'demo_train_side_00001')
    assert side.view == 'side'
    with open(side.actions_csv, newline='') as file:
        actions = list(csv.DictReader(file))
    assert [int(row['seed']) for row in actions] == [clip_seed(4, 'train', 0),
                                                     clip_seed(4, 'train', 1)]
    assert {row['view'] for row in actions} == {'side'}
    assert set(read_actions(side.actions_csv)) == set(side.video_ids)
    row = actions[0]
    spec = ActionSpec(row['action'], row['hand'], *row['object'].split(),
                      row['direction'] or None)
    clip = render_clip(spec, int(row['seed']), size=64, seconds=1.0, view='side')
    decoded = read_frames(side.videos_dir / f'{row["video_id"]}.mp4', [0, 7, 14])
    assert np.abs(decoded.astype(np.float64) - clip.frames[[0, 7, 14]]).mean() < 4
    stored = read_epic_pickle(side.detections_dir / f'{row["video_id"]}.pkl')
    np.testing.assert_allclose(
        [box.bbox.as_list() for box in stored[0].hands + stored[0].objects],
        [box.bbox.as_list() for box in clip.detections[0].hands + clip.detections[0].objects],
        atol=1e-6)
    with pytest.raises(ValueError, match='view'):
        write_demo_source(tmp_path / 'bad', num_clips=1, seed=0, split='train', view='top')
