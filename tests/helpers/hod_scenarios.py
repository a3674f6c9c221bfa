"""Scripted hand/object tracks with known rules narrations (`SCENARIOS`), and a clip built
from one, shared by the rules, narrator and LLM-server tests."""
import numpy as np

from egovideo_jax.hod.motion import motion_facts
from egovideo_jax.hod.tracks import ABSENT, DETECTED, INTERPOLATED, Tracks

N = 32
TIMES = np.linspace(3.0, 5.0, N)


def scripted(centers, contact=None, half=0.05, interpolated=()):
    boxes, valid = {}, {}
    for name in ('left_hand', 'right_hand', 'object'):
        points = np.asarray(centers.get(name, np.zeros((N, 2))), np.float64)
        boxes[name] = np.concatenate([points - half, points + half], axis=1)
        valid[name] = np.full(N, DETECTED if name in centers else ABSENT)
        if name in centers:
            valid[name][list(interpolated)] = INTERPOLATED
    contact = contact or {}
    return Tracks(boxes, valid, {side: contact.get(side, np.zeros(N)) for side in
                                 ('left', 'right')})


def still(x, y):
    return np.tile([x, y], (N, 1))


def line(start, end, num=N):
    return np.linspace(start, end, num)


def held_from(frame):
    return np.where(np.arange(N) >= frame, 3, 0)


def pick_and_move_left():
    right = np.concatenate([still(0.6, 0.5)[:8], line([0.6, 0.5], [0.3, 0.5], N - 8)])
    return scripted({'right_hand': right, 'left_hand': still(0.2, 0.6),
                     'object': right + [0.0, -0.02]}, {'right': held_from(8)})


def grasp_and_lift():
    y = np.concatenate([line(0.3, 0.6, 10), np.full(4, 0.6), line(0.6, 0.2, 18)])
    hand = np.stack([np.full(N, 0.6), y], 1)
    return scripted({'right_hand': hand, 'object': np.stack([np.full(N, 0.6),
                                                             np.minimum(y, 0.6)], 1)},
                    {'right': held_from(10)})


def shake():
    x = 0.5 + 0.08 * np.sin(np.linspace(0, 8 * np.pi, N))
    hand = np.stack([x, np.full(N, 0.5)], 1)
    return scripted({'right_hand': hand, 'object': hand, 'left_hand': still(0.2, 0.7)},
                    {'right': np.full(N, 3)})


def back_and_forth_left():
    x = np.concatenate([line(0.3, 0.6, 16), line(0.6, 0.3, 16)])
    return scripted({'left_hand': np.stack([x, np.full(N, 0.5)], 1),
                     'right_hand': still(0.7, 0.7)})


def up_then_left():
    path = np.concatenate([line([0.6, 0.7], [0.6, 0.3], 16), line([0.6, 0.3], [0.2, 0.3], 16)])
    return scripted({'left_hand': path})


def carry_and_put_down():
    x = np.concatenate([line(0.3, 0.6, 20), line(0.6, 0.8, 12)])
    hand = np.stack([x, np.full(N, 0.5)], 1)
    return scripted({'right_hand': hand, 'left_hand': line([0.2, 0.7], [0.2, 0.4]),
                     'object': np.stack([np.minimum(x, 0.6), np.full(N, 0.5)], 1)},
                    {'right': np.where(np.arange(N) < 20, 3, 0)})


def put_down_and_pick_up_again():
    x = np.concatenate([line(0.3, 0.5, 10), np.full(10, 0.5), line(0.5, 0.8, 12)])
    hand = np.stack([x, np.full(N, 0.5)], 1)
    contact = np.where((np.arange(N) < 10) | (np.arange(N) >= 20), 3, 0)
    return scripted({'right_hand': hand, 'object': hand}, {'right': contact})


SCENARIOS = {
    'pick_and_move_left': ('#C C picks up the red cup', pick_and_move_left,
                           'C picks up the red cup with the right hand and moves it to the left. '
                           'Meanwhile, the left hand stays still.'),
    'grasp_and_lift': ('#C C takes the scissors', grasp_and_lift,
                       'C reaches down, picks up the scissors with the right hand and lifts '
                       'them.'),
    'shake': ('#C C shakes the bottle', shake,
              'The right hand shakes the bottle rapidly. Meanwhile, the left hand stays still.'),
    'back_and_forth': ('#C C wipes the table', back_and_forth_left,
                       'The left hand moves back and forth horizontally. Meanwhile, the right '
                       'hand stays still.'),
    'up_then_left': ('#C C moves the plate', up_then_left,
                     'The left hand moves up and then to the left.'),
    'carry_and_put_down': ('#C C puts the mug on the shelf', carry_and_put_down,
                           'The right hand moves the mug to the right, puts it down and moves '
                           'away to the right. Meanwhile, the left hand moves up.'),
    'put_down_and_pick_up_again': ('#C C picks up the cup', put_down_and_pick_up_again,
                                   'C moves the cup to the right, puts it down, picks it up with '
                                   'the right hand and moves it to the right.'),
}

# Valid for the `pick_and_move_left` clip: the right hand takes the cup and moves it left.
VALID = 'C picks up the red cup with the right hand and moves it to the left.'


def clip(name='pick_and_move_left'):
    narration, make_tracks, _ = SCENARIOS[name]
    tracks = make_tracks()
    return narration, tracks, motion_facts(tracks, TIMES)
