"""HOD tracks (picking, interpolation, smoothing, contact) and motion facts, on hand-computed
answers."""
import json

import numpy as np
import pytest

from egovideo_jax.hod import motion
from egovideo_jax.hod.detections import BBox, FrameDetections, HandDetection, ObjectDetection
from egovideo_jax.hod.tracks import ABSENT, DETECTED, INTERPOLATED, Tracks, build_tracks
from tests.helpers.hod_scenarios import N, line, scripted, still


def hand(x, y, side='right', score=0.9, state=0, offset=(0.0, 0.0), half=0.05):
    return HandDetection(BBox(x - half, y - half, x + half, y + half), score, state, offset,
                         side)


def obj(x, y, score=0.8, half=0.05):
    return ObjectDetection(BBox(x - half, y - half, x + half, y + half), score)


# ----------------------------------------------------------------------------- tracks

def test_interpolation_holds_ends_and_marks_validity():
    frames = [None,
              FrameDetections(1, (hand(0.2, 0.5),)),
              None,
              None,
              FrameDetections(4, (hand(0.5, 0.2),)),
              FrameDetections(5, ())]
    tracks = build_tracks(frames)
    # x: held 0.2, detected 0.2, 0.3, 0.4 (thirds of the gap), detected 0.5, held 0.5
    expected_centers = [[0.2, 0.5], [0.2, 0.5], [0.3, 0.4], [0.4, 0.3], [0.5, 0.2], [0.5, 0.2]]
    np.testing.assert_allclose(tracks.centers('right_hand'), expected_centers, atol=1e-6)
    np.testing.assert_allclose(tracks.boxes['right_hand'][2], [0.25, 0.35, 0.35, 0.45],
                               atol=1e-6)
    assert tracks.valid['right_hand'].tolist() == [INTERPOLATED, DETECTED, INTERPOLATED,
                                                   INTERPOLATED, DETECTED, INTERPOLATED]
    assert tracks.valid['left_hand'].tolist() == [ABSENT] * 6
    assert not tracks.present('left_hand') and tracks.present('right_hand')
    assert tracks.boxes['object'].dtype == np.float32 and not tracks.boxes['object'].any()
    assert tracks.valid['object'].dtype == np.int32


def test_box_sizes_interpolate_linearly_too():
    frames = [FrameDetections(0, (hand(0.5, 0.5, half=0.1),)), None,
              FrameDetections(2, (hand(0.5, 0.5, half=0.2),))]
    np.testing.assert_allclose(build_tracks(frames).boxes['right_hand'][1],
                               [0.35, 0.35, 0.65, 0.65], atol=1e-6)


def test_best_hand_per_side_and_threshold():
    frame = FrameDetections(0, (hand(0.2, 0.5, score=0.6), hand(0.8, 0.5, score=0.95),
                                hand(0.3, 0.3, side='left', score=0.4)))
    tracks = build_tracks([frame])
    np.testing.assert_allclose(tracks.centers('right_hand')[0], [0.8, 0.5], atol=1e-6)
    assert not tracks.present('left_hand')  # 0.4 < hand_threshold 0.5
    assert build_tracks([frame], hand_threshold=0.3).present('left_hand')


def test_interacted_object_follows_the_contact_offset():
    objects = (obj(0.2, 0.2, score=0.95), obj(0.7, 0.8, score=0.6))
    holding = hand(0.6, 0.6, state=3, offset=(0.1, 0.25))  # points at (0.7, 0.85)
    tracks = build_tracks([FrameDetections(0, (holding,), objects)])
    np.testing.assert_allclose(tracks.centers('object')[0], [0.7, 0.8], atol=1e-6)
    # a hand touching a stationary object (4) does not pick: the highest score wins
    touching = hand(0.6, 0.6, state=4, offset=(0.1, 0.25))
    tracks = build_tracks([FrameDetections(0, (touching,), objects)])
    np.testing.assert_allclose(tracks.centers('object')[0], [0.2, 0.2], atol=1e-6)
    # below the object threshold the held object is not a candidate, and the other one is
    # too far from where the hand points to be it: no object rather than a wrong one
    tracks = build_tracks([FrameDetections(0, (holding,), objects)], object_threshold=0.7)
    assert tracks.valid['object'].tolist() == [0]


def test_a_missed_object_is_interpolated_not_replaced_by_a_distractor():
    target, distractor = obj(0.5, 0.5, score=0.9), obj(0.1, 0.9, score=0.8)
    frames = [FrameDetections(0, (), (target, distractor)),
              FrameDetections(1, (), (distractor,)),  # the target's detection was missed
              FrameDetections(2, (), (obj(0.52, 0.5, score=0.9), distractor))]
    tracks = build_tracks(frames)
    assert tracks.valid['object'].tolist() == [1, 2, 1]
    np.testing.assert_allclose(tracks.centers('object')[1], [0.51, 0.5], atol=1e-6)


def test_contact_holds_the_previous_detection():
    frames = [None, FrameDetections(1, (hand(0.5, 0.5, state=1),)), None,
              FrameDetections(3, (hand(0.5, 0.5, state=3),)), None]
    tracks = build_tracks(frames)
    assert tracks.contact['right'].tolist() == [1, 1, 1, 3, 3]
    assert tracks.contact['left'].tolist() == [0, 0, 0, 0, 0]


def test_smoothing_averages_centres_over_a_shrinking_window():
    xs = [0.2, 0.2, 0.5, 0.2, 0.2]
    frames = [FrameDetections(i, (hand(x, 0.5),)) for i, x in enumerate(xs)]
    tracks = build_tracks(frames, smoothing=3)
    # windows: [0,1], [0,2], [1,3], [2,4], [3,4]
    np.testing.assert_allclose(tracks.centers('right_hand')[:, 0], [0.2, 0.3, 0.3, 0.3, 0.2],
                               atol=1e-6)
    np.testing.assert_allclose(np.diff(tracks.boxes['right_hand'][:, ::2], axis=1), 0.1,
                               atol=1e-6)  # sizes kept
    assert tracks.valid['right_hand'].tolist() == [DETECTED] * 5
    with pytest.raises(ValueError, match='odd window'):
        build_tracks(frames, smoothing=2)


def test_record_fields_round_trip_and_schema_names():
    from egovideo_jax.records import schema
    tracks = build_tracks([FrameDetections(0, (hand(0.5, 0.5, state=3),), (obj(0.5, 0.6),)),
                           None])
    fields = tracks.to_record_fields()
    assert set(fields['boxes']) == set(schema.BOX_NAMES)
    assert set(fields['contact']) == set(schema.HAND_NAMES)
    clip = {'clip_id': 'c', 'video_id': 'v', 'source': 'demo', 'start': 0.0, 'end': 1.0,
            'frames_jpeg': [schema.encode_jpeg(np.zeros((8, 8, 3), np.uint8))] * 2,
            'frame_times': [0.0, 0.5], 'narration': 'C takes the cup', 'hod': [], **fields}
    decoded = Tracks.from_record_fields(schema.decode_clip(schema.encode_clip(clip)))
    for name in tracks.boxes:
        np.testing.assert_array_equal(decoded.boxes[name], tracks.boxes[name])
        np.testing.assert_array_equal(decoded.valid[name], tracks.valid[name])
    assert decoded.contact['right'].tolist() == [3, 3]
    assert Tracks.empty(3).num_frames == 3


def test_tracks_reject_inconsistent_shapes():
    empty = Tracks.empty(4)
    with pytest.raises(ValueError, match=r"Tracks.boxes\['object'\]"):
        Tracks({**empty.boxes, 'object': np.zeros((3, 4))}, empty.valid, empty.contact)


# ----------------------------------------------------------------------------- motion facts

TIMES = np.linspace(10.0, 12.0, N)  # absolute times: facts report them from the clip start


def test_hand_moving_right():
    facts = motion.motion_facts(scripted({'right_hand': line([0.3, 0.6], [0.7, 0.6]),
                                          'left_hand': still(0.2, 0.6)}), TIMES)
    right = facts.hand('right')
    assert right.present and right.direction == 'right' and right.moved
    assert right.start == pytest.approx((0.3, 0.6)) and right.end == pytest.approx((0.7, 0.6))
    assert right.distance == pytest.approx(0.4) and right.path_length == pytest.approx(0.4)
    assert [phase.direction for phase in right.phases] == ['right']
    assert right.oscillation is None and right.reversals == 0
    left = facts.hand('left')
    assert left.direction == 'still' and not left.moved and not facts.active('left')
    assert not facts.tracks['object'].present
    assert facts.duration == pytest.approx(2.0) and facts.clip_times[0] == 0.0
    assert facts.contact_events == () and facts.holding_hand is None


def test_hand_going_up_then_left():
    path = np.concatenate([line([0.6, 0.7], [0.6, 0.3], 16), line([0.6, 0.3], [0.2, 0.3], 16)])
    left = motion.motion_facts(scripted({'left_hand': path}), TIMES).hand('left')
    assert left.direction == 'up-left'
    assert [phase.direction for phase in left.phases] == ['up', 'left']
    first, second = left.phases
    assert (first.start_frame, first.end_frame, second.end_frame) == (0, 15, 31)
    assert first.end_time == pytest.approx(15 * 2 / 31)
    assert first.displacement == pytest.approx((0.0, -0.4))
    assert left.path_length == pytest.approx(0.8) and left.oscillation is None


def test_shake_is_detected_from_a_sinusoid():
    x = 0.5 + 0.08 * np.sin(np.linspace(0, 8 * np.pi, N))  # four periods, 8 turn-backs
    facts = motion.motion_facts(scripted({'right_hand': np.stack([x, np.full(N, 0.5)], 1)},
                                         {'right': np.full(N, 3)}), TIMES)
    right = facts.hand('right')
    assert right.oscillation == 'shakes' and right.axis == 'horizontal'
    assert right.reversals == 8 and right.direction == 'still'
    assert facts.holding_hand == 'right' and facts.held_frames == {'left': 0, 'right': N}


def test_small_jitter_is_neither_a_shake_nor_a_move():
    rng = np.random.default_rng(0)
    jitter = still(0.5, 0.5) + rng.uniform(-0.01, 0.01, (N, 2))
    right = motion.motion_facts(scripted({'right_hand': jitter}), TIMES).hand('right')
    assert (right.direction, right.oscillation, right.moved) == ('still', None, False)


def test_back_and_forth():
    y = np.concatenate([line(0.3, 0.6, 16), line(0.6, 0.3, 16)])
    left = motion.motion_facts(scripted({'left_hand': np.stack([np.full(N, 0.4), y], 1)}),
                               TIMES).hand('left')
    assert left.oscillation == 'back_and_forth' and left.axis == 'vertical'
    assert left.reversals == 1 and left.direction == 'still' and left.moved
    assert [phase.direction for phase in left.phases] == ['down', 'up']


def test_grasp_then_lift():
    y = np.concatenate([line(0.3, 0.6, 10), np.full(4, 0.6), line(0.6, 0.2, 18)])
    right = np.stack([np.full(N, 0.6), y], 1)
    cup = np.stack([np.full(N, 0.6), np.minimum(y, 0.6) + 0.05], 1)
    contact = np.where(np.arange(N) >= 10, 3, 0)
    contact[20] = 0  # one-frame detector flicker: not a release
    facts = motion.motion_facts(scripted({'right_hand': right, 'left_hand': still(0.2, 0.7),
                                          'object': cup}, {'right': contact}), TIMES)
    (event,) = facts.contact_events
    assert (event.hand, event.kind, event.frame) == ('right', 'grasp', 10)
    assert event.time == pytest.approx(10 * 2 / 31)
    assert (event.before, event.after) == ('down', 'up')
    hand_facts = facts.hand('right')
    assert hand_facts.direction == 'up' and hand_facts.oscillation is None  # reach + lift
    assert [phase.direction for phase in hand_facts.phases] == ['down', 'up']
    assert facts.tracks['object'].direction == 'up'
    assert facts.holding_hand == 'right' and facts.held_frames['right'] == N - 10
    assert facts.object_relations['right'] == motion.ObjectRelation('right', 'below', 'at')
    assert facts.object_relations['left'] == motion.ObjectRelation('left', 'above-right',
                                                                   'above-right')
    assert facts.active('right') and not facts.active('left')


def test_release_event_and_directions_around_it():
    x = np.concatenate([line(0.3, 0.6, 16), line(0.6, 0.3, 16)])
    contact = np.where(np.arange(N) < 16, 3, 0)
    facts = motion.motion_facts(scripted({'left_hand': np.stack([x, np.full(N, 0.5)], 1)},
                                         {'left': contact}), TIMES)
    (event,) = facts.contact_events
    assert (event.hand, event.kind, event.frame, event.before, event.after) == (
        'left', 'release', 16, 'right', 'left')
    assert facts.hand('left').oscillation is None  # a put-down and a withdrawal


@pytest.mark.parametrize('dx, dy, word', [
    (0.1, 0.0, 'right'), (-0.1, 0.0, 'left'), (0.0, -0.1, 'up'), (0.0, 0.1, 'down'),
    (0.1, -0.1, 'up-right'), (-0.1, 0.1, 'down-left'), (0.1, 0.03, 'right'),
    (0.03, 0.02, 'still'),
])
def test_direction_words_use_image_coordinates(dx, dy, word):
    assert motion.direction_word(dx, dy) == word


def test_relation_and_direction_phrases():
    assert motion.relation_word(0.2, -0.2) == 'above-right'
    assert motion.relation_word(0.01, 0.02) == 'at'
    assert motion.relation_phrase('above-right') == 'above and to the right of'
    assert motion.direction_phrase('down-left') == 'down and to the left'


def test_to_dict_is_json_serialisable():
    facts = motion.motion_facts(scripted({'right_hand': line([0.3, 0.6], [0.7, 0.6])}), TIMES)
    data = json.loads(json.dumps(facts.to_dict()))
    assert data['tracks']['right_hand']['direction'] == 'right'
    assert data['tracks']['right_hand']['end'] == [0.7, 0.6]


def test_motion_facts_checks_frame_times():
    with pytest.raises(ValueError, match='frame_times: expected 32'):
        motion.motion_facts(scripted({}), TIMES[:-1])
