"""The HOD prompt (versioned here and only here) and the checks every narration must pass.

`build_prompt(narration, tracks, facts, frame_times, num_steps=6) -> list[dict]`: OpenAI chat
messages `[{'role': 'system', 'content': ...}, {'role': 'user', 'content': ...}]`. The system
message states the task and rules and shows one worked example in the paper's style (the input
rendered by the same code as real inputs); the user message holds the original narration (tags
like `#C` removed), the box of each present track at `num_steps` evenly spread frames
(normalised xyxy, 2 decimals, `*` marking interpolated boxes) and the motion facts in words.
Any change to the wording must bump `PROMPT_VERSION`: it is part of the narration cache key.

`validate_narration(text, facts) -> list[str]`: the problems of a narration (empty list: it
passes): empty; fewer than MIN_WORDS or more than MAX_WORDS words; no letters, mostly
non-letters or a token / phrase repeated three times in a row; a hand mentioned that was never
detected; a clause about one hand that contradicts the tracks (it "stays still" but moved; it
acts but only the other hand moved or held the object; it holds the object but only the other
hand did).

`clean_narration(text)` drops Ego4D tags (`#C C takes the scissors` -> `C takes the
scissors`); `describe_facts(facts)` renders motion facts as English lines.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from egovideo_jax.hod.detections import HAND_SIDES
from egovideo_jax.hod.motion import (
    STILL,
    MotionFacts,
    TrackFacts,
    direction_phrase,
    motion_facts,
    relation_phrase,
)
from egovideo_jax.hod.tracks import INTERPOLATED, TRACK_NAMES, Tracks

PROMPT_VERSION = 'hod-v1'
MIN_WORDS = 4
MAX_WORDS = 120
TRACK_LABELS = {'left_hand': 'left hand', 'right_hand': 'right hand', 'object': 'object'}

_TASK = """\
You rewrite the narration of a short egocentric (first-person) video clip so that it says \
how the hands of the camera wearer ("C") and the object they handle move.
You get the original narration, the boxes of the left hand, the right hand and the \
interacted object at a few moments of the clip, and motion facts computed from every frame. \
Boxes are [x1, y1, x2, y2] in image coordinates normalised to 0-1: x grows to the right and \
y grows downward, so a smaller y is higher in the image. A * marks a box that was \
interpolated between detections.
Rules:
- Keep the action and the object of the original narration.
- Say which hand does what, how it moves (up, down, to the left or right, shaking, back and \
forth) and where the object goes.
- Mention only hands that have boxes, and never swap left and right.
- Write one to three plain sentences in the present tense. No coordinates, lists or preamble: \
answer with the new narration only."""

_EXAMPLE_NARRATION = 'C takes the scissors'
_EXAMPLE_ANSWER = (
    'C picks up the scissors with their right hand and moves them to the right side of the '
    'table. Meanwhile, their left hand reaches for a piece of paper and brings it closer to '
    'the scissors.')


def clean_narration(text: str) -> str:
    """The narration without Ego4D tags (`#C`, `#O`, `#unsure`) and extra spaces."""
    return ' '.join(re.sub(r'#\w+', ' ', text).split())


def build_prompt(narration: str, tracks: Tracks, facts: MotionFacts,
                 frame_times: Sequence[float], num_steps: int = 6) -> list[dict]:
    system = (f'{_TASK}\n\nExample.\n{_example_input()}\nNew narration: {_EXAMPLE_ANSWER}')
    return [{'role': 'system', 'content': system},
            {'role': 'user', 'content': _render_input(narration, tracks, facts, frame_times,
                                                      num_steps)}]


def _render_input(narration: str, tracks: Tracks, facts: MotionFacts,
                  frame_times: Sequence[float], num_steps: int) -> str:
    times = np.asarray(frame_times, np.float64)
    if times.shape != (tracks.num_frames,):
        raise ValueError(f'frame_times: expected {tracks.num_frames} times (one per frame), '
                         f'got shape {times.shape}')
    if num_steps < 1:
        raise ValueError(f'num_steps: expected at least 1, got {num_steps}')
    steps = np.unique(np.round(np.linspace(0, tracks.num_frames - 1,
                                           min(num_steps, tracks.num_frames))).astype(int))
    present = [name for name in TRACK_NAMES if tracks.present(name)]
    lines = [f'Original narration: {clean_narration(narration)}',
             f'Clip length: {facts.duration:.2f} s', 'Boxes:']
    for step in steps:
        boxes = '; '.join(f'{TRACK_LABELS[name]} {_box_text(tracks, name, step)}'
                          for name in present) or 'nothing detected'
        lines.append(f't={times[step] - times[0]:.2f}s: {boxes}')
    lines.append('Motion facts:')
    lines.extend(f'- {line}' for line in describe_facts(facts))
    return '\n'.join(lines)


def _box_text(tracks: Tracks, name: str, frame: int) -> str:
    coords = ', '.join(f'{value:.2f}' for value in tracks.boxes[name][frame])
    marker = '*' if tracks.valid[name][frame] == INTERPOLATED else ''
    return f'[{coords}]{marker}'


def describe_facts(facts: MotionFacts) -> list[str]:
    lines = [f'{TRACK_LABELS[name]}: {_describe_track(facts.tracks[name])}'
             for name in TRACK_NAMES]
    for event in facts.contact_events:
        verb = 'grasps' if event.kind == 'grasp' else 'releases'
        lines.append(f'the {event.hand} hand {verb} the object at {event.time:.2f} s '
                     f'(before: {_motion(event.before)}; after: {_motion(event.after)})')
    for relation in facts.object_relations.values():
        lines.append(f'the object starts {relation_phrase(relation.start)} the {relation.hand} '
                     f'hand and ends {relation_phrase(relation.end)} it')
    num_frames = len(facts.clip_times)
    for side in HAND_SIDES:
        if facts.held_frames[side]:
            lines.append(f'the {side} hand holds the object in {facts.held_frames[side]} of '
                         f'{num_frames} frames')
    return lines


def _describe_track(track: TrackFacts) -> str:
    if not track.present:
        return 'not seen'
    if track.oscillation == 'shakes':
        return (f'shakes {track.axis}ly ({track.reversals} reversals), net movement '
                f'{_motion(track.direction)}')
    if track.oscillation == 'back_and_forth':
        return f'moves back and forth {track.axis}ly and ends {_motion(track.direction)}'
    text = (f'{_motion(track.direction)} overall (net {track.distance:.2f}, '
            f'path {track.path_length:.2f})')
    if len(track.phases) > 1:
        text += '; phases: ' + ', then '.join(
            f'{_motion(phase.direction)} ({phase.start_time:.2f}-{phase.end_time:.2f} s)'
            for phase in track.phases)
    return text


def _motion(direction: str) -> str:
    return 'stays still' if direction == STILL else f'moves {direction_phrase(direction)}'


@functools.cache
def _example_input() -> str:
    """The worked example's input, scripted and rendered like a real clip: the right hand
    grasps the scissors and carries them to the right while the left hand reaches right."""
    num_frames = 8
    frames = np.arange(num_frames)
    carried = np.clip(frames - 2, 0, None) / (num_frames - 3)
    centers = {
        'right_hand': np.stack([0.62 - 0.06 * np.minimum(frames, 2) / 2 + 0.26 * carried,
                                np.full(num_frames, 0.62)], axis=1),
        'object': np.stack([0.52 + 0.26 * carried, np.full(num_frames, 0.58)], axis=1),
        'left_hand': np.stack([np.linspace(0.18, 0.36, num_frames),
                               np.linspace(0.74, 0.64, num_frames)], axis=1),
    }
    half_sizes = {'left_hand': 0.07, 'right_hand': 0.07, 'object': 0.05}
    tracks = Tracks(
        boxes={name: np.concatenate([centers[name] - half_sizes[name],
                                     centers[name] + half_sizes[name]], axis=1)
               for name in TRACK_NAMES},
        valid={name: np.ones(num_frames) for name in TRACK_NAMES},
        contact={'left': np.zeros(num_frames), 'right': np.where(frames >= 2, 3, 0)})
    times = frames * 0.2
    return _render_input(_EXAMPLE_NARRATION, tracks, motion_facts(tracks, times), times, 6)


# ----------------------------------------------------------------------------- validation

_HAND_MENTION = re.compile(
    r'\b(left|right)(?:\s+and\s+(?:the\s+|their\s+)?(left|right))?[\s-]+hands?\b'
    r'(?![\s-]*side)', re.IGNORECASE)
_BOTH_HANDS = re.compile(r'\b(both|two)\s+hands\b', re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r'(?<=[.!?;])\s+|\b(?:while|whereas|meanwhile)\b', re.IGNORECASE)
_STILL_CLAIM = re.compile(
    r'\b(?:stays?|remains?|keeps?|staying|remaining)\s+(?:\w+\s+)?(?:still|motionless|'
    r'stationary|idle|in place)\b|\brest(?:s|ing)?\b|\bdoes(?:n\'t| not) move\b|'
    r'\bnot moving\b', re.IGNORECASE)
_HOLD_VERBS = ('pick', 'grasp', 'grab', 'take', 'hold', 'lift', 'carry')
# Words that are also common nouns or adjectives ('lower', 'close', 'tap') are left out.
_ACTION_VERBS = _HOLD_VERBS + ('shake', 'move', 'reach', 'raise', 'bring', 'push', 'pull', 'place',
                               'put', 'drop', 'release', 'slide', 'drag', 'turn', 'rotate',
                               'wave', 'swing', 'open', 'cut', 'pour', 'wipe', 'stir', 'touch',
                               'press')


def _verb_pattern(verbs: Sequence[str]) -> re.Pattern:
    forms = {'take': 'takes|took|taking|taken', 'carry': 'carries|carried|carrying',
             'put': 'puts|putting', 'bring': 'brings|brought|bringing', 'cut': 'cuts|cutting',
             'drop': 'drops|dropped|dropping', 'grab': 'grabs|grabbed|grabbing',
             'swing': 'swings|swung|swinging', 'stir': 'stirs|stirred|stirring',
             'hold': 'holds|held|holding',
             'shake': 'shakes|shook|shaking|shaken'}
    alternatives = []
    for verb in verbs:
        stem = verb[:-1] if verb.endswith('e') else verb
        alternatives.append(forms.get(verb, f'{verb}s|{verb}es|{stem}ed|{stem}ing'))
        alternatives.append(verb)
    return re.compile(r'\b(?:' + '|'.join(alternatives) + r')\b', re.IGNORECASE)


_HOLD_PATTERN = _verb_pattern(_HOLD_VERBS)
_ACTION_PATTERN = _verb_pattern(_ACTION_VERBS)


def validate_narration(text: str, facts: MotionFacts) -> list[str]:
    if not text or not text.strip():
        return ['empty narration']
    problems = []
    words = re.findall(r"[^\W\d_]+(?:['-][^\W\d_]+)*", text)
    if not words:
        return ['no letters']
    visible = re.sub(r'\s+', '', text)
    if sum(char.isalpha() for char in visible) < 0.6 * len(visible):
        problems.append('mostly non-letters')
    if len(words) < MIN_WORDS:
        problems.append(f'too short: {len(words)} words, at least {MIN_WORDS} expected')
    if len(words) > MAX_WORDS:
        problems.append(f'too long: {len(words)} words, at most {MAX_WORDS} expected')
    repeated = _repeated_phrase([word.lower() for word in words[:2 * MAX_WORDS]])
    if repeated:
        problems.append(f'repeats {repeated!r} three times in a row')
    problems.extend(_hand_problems(text, facts))
    return problems


def _repeated_phrase(words: list[str], max_length: int = 5) -> str | None:
    for length in range(1, max_length + 1):
        for start in range(len(words) - 3 * length + 1):
            phrase = words[start:start + length]
            if (phrase == words[start + length:start + 2 * length]
                    == words[start + 2 * length:start + 3 * length]):
                return ' '.join(phrase)
    return None


def _sides_mentioned(text: str) -> set[str]:
    sides = {side.lower() for match in _HAND_MENTION.finditer(text)
             for side in match.groups() if side}
    return sides | (set(HAND_SIDES) if _BOTH_HANDS.search(text) else set())


def _hand_problems(text: str, facts: MotionFacts) -> list[str]:
    problems = [f'mentions the {side} hand, which was never detected'
                for side in HAND_SIDES
                if side in _sides_mentioned(text) and not facts.hand(side).present]
    for clause in filter(None, _CLAUSE_BREAK.split(text)):
        sides = _sides_mentioned(clause)
        if len(sides) != 1:
            continue  # no hand, or both: nothing to pin on one side
        side = sides.pop()
        other = HAND_SIDES[1 - HAND_SIDES.index(side)]
        hand = facts.hand(side)
        if not hand.present:
            continue
        if _STILL_CLAIM.search(clause):
            if hand.moved:
                problems.append(f'says the {side} hand stays still, but it moved '
                                f'({direction_phrase(hand.direction)} overall): {clause.strip()!r}')
        elif _ACTION_PATTERN.search(clause) and not facts.active(side) and facts.active(other):
            problems.append(f'says the {side} hand acts, but only the {other} hand moved or '
                            f'held the object: {clause.strip()!r}')
        elif (_HOLD_PATTERN.search(clause) and facts.held_frames[side] == 0
              and facts.held_frames[other] > 0):
            problems.append(f'says the {side} hand holds the object, but only the {other} '
                            f'hand held it: {clause.strip()!r}')
    return problems
