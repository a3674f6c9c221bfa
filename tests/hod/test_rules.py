"""HOD prompt, narration validation, the rules narrator and the narrator registry."""
import itertools
import re
import sys
import textwrap

import numpy as np
import pytest

from egovideo_jax.hod import narrators, prompt
from egovideo_jax.hod.motion import motion_facts
from egovideo_jax.hod.narrators.rules import RulesNarrator, parse_narration
from egovideo_jax.hod.tracks import Tracks
from tests.helpers.hod_scenarios import (
    SCENARIOS,
    TIMES,
    N,
    back_and_forth_left,
    carry_and_put_down,
    grasp_and_lift,
    held_from,
    line,
    pick_and_move_left,
    scripted,
    shake,
    still,
    up_then_left,
)


def narrate(name):
    narration, make_tracks, _ = SCENARIOS[name]
    tracks = make_tracks()
    facts = motion_facts(tracks, TIMES)
    return RulesNarrator().narrate(narration, tracks, facts), facts


# ----------------------------------------------------------------------------- rules narrator

@pytest.mark.parametrize('name', SCENARIOS)
def test_rules_known_answers(name):
    text, _ = narrate(name)
    assert text == SCENARIOS[name][2]


@pytest.mark.parametrize('name', SCENARIOS)
def test_rules_narrations_are_deterministic_and_valid(name):
    first, facts = narrate(name)
    assert narrate(name)[0] == first
    assert prompt.validate_narration(first, facts) == []


def test_rules_hand_words_match_the_moving_hand():
    """Swapping the tracks left <-> right swaps the hand words and nothing else."""
    for name in SCENARIOS:
        narration, make_tracks, _ = SCENARIOS[name]
        tracks = make_tracks()
        mirrored = Tracks(
            {'left_hand': tracks.boxes['right_hand'], 'right_hand': tracks.boxes['left_hand'],
             'object': tracks.boxes['object']},
            {'left_hand': tracks.valid['right_hand'], 'right_hand': tracks.valid['left_hand'],
             'object': tracks.valid['object']},
            {'left': tracks.contact['right'], 'right': tracks.contact['left']})
        text = RulesNarrator().narrate(narration, mirrored, motion_facts(mirrored, TIMES))
        swapped = re.sub(r'\b(left|right) hand', lambda m: {'left': 'right', 'right': 'left'}[
            m.group(1)] + ' hand', SCENARIOS[name][2])
        assert text == swapped, name


def test_rules_without_active_hands():
    cases = [({'left_hand': still(0.2, 0.6), 'right_hand': still(0.7, 0.6)},
              'C takes the plate. Both hands stay still.'),
             ({'right_hand': still(0.7, 0.6)}, 'C takes the plate. The right hand stays still.'),
             ({}, 'C takes the plate. No hands are in view.')]
    for centers, expected in cases:
        tracks = scripted(centers)
        facts = motion_facts(tracks, TIMES)
        text = RulesNarrator().narrate('take plate', tracks, facts)
        assert text == expected
        assert prompt.validate_narration(text, facts) == []


def test_rules_grasp_verb_follows_the_narration():
    tracks = pick_and_move_left()
    text = RulesNarrator().narrate('#C C opens the jar', tracks, motion_facts(tracks, TIMES))
    assert text.startswith('C grasps the jar with the right hand and moves it to the left.')


@pytest.mark.parametrize('narration, verb, noun', [
    ('#C C picks up the scissors from the table', 'picks up', 'the scissors'),
    ('put down knife', 'puts down', 'the knife'),
    ('#C C holds a knife in his right hand', 'holds', 'a knife'),
    ('#C C opens the fridge door with the left hand #unsure', 'opens', 'the fridge door'),
    ('#C C looks around', 'looks around', 'the object'),
    ('wash glass', 'washes', 'the glass'),
    ('', '', 'the object'),
])
def test_parse_narration(narration, verb, noun):
    parsed = parse_narration(narration)
    assert (parsed.verb, parsed.object) == (verb, noun)


def test_pronouns():
    assert parse_narration('C takes the scissors').pronoun == 'them'
    assert parse_narration('C takes the glass').pronoun == 'it'


# ----------------------------------------------------------------------------- prompt

def test_prompt_layout():
    tracks = scripted({'right_hand': line([0.3, 0.6], [0.7, 0.6]), 'object': still(0.5, 0.5)},
                      interpolated=[31])
    facts = motion_facts(tracks, TIMES)
    messages = prompt.build_prompt('#C C takes the cup', tracks, facts, TIMES, num_steps=5)
    assert [message['role'] for message in messages] == ['system', 'user']
    assert prompt.PROMPT_VERSION == 'hod-v1'
    system, user = messages[0]['content'], messages[1]['content']
    assert 'y grows downward' in system and 'C takes the scissors' in system
    assert 'picks up the scissors with their right hand' in system
    assert user.startswith('Original narration: C takes the cup\n')
    steps = [line for line in user.splitlines() if line.startswith('t=')]
    assert steps[0] == ('t=0.00s: right hand [0.25, 0.55, 0.35, 0.65]; '
                        'object [0.45, 0.45, 0.55, 0.55]')
    assert steps[-1].startswith('t=2.00s: right hand [0.65, 0.55, 0.75, 0.65]*;')
    assert len(steps) == 5 and 'left hand [' not in user
    assert '- left hand: not seen' in user
    assert '- right hand: moves to the right overall (net 0.40, path 0.40)' in user
    assert ('the object starts above and to the right of the right hand and ends above and '
            'to the left of it') in user
    assert prompt.build_prompt('#C C takes the cup', tracks, facts, TIMES, 5) == messages


def test_prompt_lists_events_and_phases():
    tracks = grasp_and_lift()
    facts = motion_facts(tracks, TIMES)
    user = prompt.build_prompt('#C C takes the scissors', tracks, facts, TIMES)[1]['content']
    assert 'phases: moves down (0.00-0.58 s), then moves up (0.58-2.00 s)' in user
    assert ('the right hand grasps the object at 0.65 s (before: moves down; after: moves up)'
            in user)
    assert f'the right hand holds the object in {N - 10} of {N} frames' in user
    with pytest.raises(ValueError, match='frame_times'):
        prompt.build_prompt('x', tracks, facts, TIMES[:3])


def test_clean_narration():
    assert prompt.clean_narration('#C C picks up  the cup #unsure') == 'C picks up the cup'


# ----------------------------------------------------------------------------- validation

@pytest.fixture(scope='module')
def right_only_moves():
    """The right hand picks the cup up and moves it; the left hand is seen but still."""
    return motion_facts(pick_and_move_left(), TIMES)


@pytest.mark.parametrize('text, problem', [
    ('', 'empty narration'),
    ('   ', 'empty narration'),
    ('1234 5678 !!!', 'no letters'),
    ('C lifts.', 'too short'),
    (' '.join(['C moves the cup to the left with the right hand.'] * 15), 'too long'),
    ('C picks up the the the cup with the right hand.', "repeats 'the'"),
    ('The right hand moves it moves it moves it to the left.', "repeats 'moves it'"),
    ('C [0.25, 0.55, 0.35, 0.65] -> [0.65, 0.55, 0.75, 0.65] cup', 'mostly non-letters'),
    ('C picks up the cup with the left hand and moves it to the left.',
     'says the left hand acts, but only the right hand'),
    ('C picks up the cup with the right hand. Meanwhile, the left hand lifts a plate.',
     'says the left hand acts'),
    ('The right hand stays still while the left hand rests on the table.',
     'says the right hand stays still, but it moved'),
])
def test_validation_problems(right_only_moves, text, problem):
    problems = prompt.validate_narration(text, right_only_moves)
    assert any(problem in found for found in problems), problems


def test_validation_flags_a_hand_never_seen():
    facts = motion_facts(up_then_left(), TIMES)  # only the left hand is seen
    assert prompt.validate_narration('The left hand moves up and then to the left.', facts) == []
    for text in ('The right hand moves up and then to the left.',
                 'Both hands move up and then to the left.',
                 'The left and right hands move up together.'):
        assert any('right hand, which was never detected' in problem
                   for problem in prompt.validate_narration(text, facts)), text


def test_validation_flags_the_wrong_holder():
    facts = motion_facts(back_and_forth_left(), TIMES)  # nobody holds anything
    assert prompt.validate_narration(
        'The left hand moves back and forth while the right hand stays still.', facts) == []
    holding = motion_facts(carry_and_put_down(), TIMES)  # right holds, left moves up empty
    problems = prompt.validate_narration(
        'C picks up the mug with the left hand and raises it.', holding)
    assert any('only the right hand held it' in problem for problem in problems), problems


def test_validation_accepts_good_narrations(right_only_moves):
    for text in ('C picks up the red cup with their right hand and moves it to the left side '
                 'of the table. Meanwhile, the left hand stays still.',
                 'The right hand lifts the cup and carries it to the left-hand side while the '
                 'left hand rests near the plate.',
                 'C takes the cup and moves it towards the right hand side of the sink.'):
        assert prompt.validate_narration(text, right_only_moves) == [], text


# ----------------------------------------------------------------------------- registry

def test_registry_has_rules():
    assert 'rules' in narrators.NARRATORS
    narrator = narrators.make_narrator('rules')
    assert isinstance(narrator, narrators.Narrator)
    assert (narrator.name, narrator.model) == ('rules', 'rules-v1')
    assert 'rules' in narrators.available_narrators()
    with pytest.raises(ValueError, match="unknown narrator 'nope'"):
        narrators.make_narrator('nope')


def test_registry_imports_backend_modules_lazily(tmp_path, monkeypatch):
    (tmp_path / 'echo_backend.py').write_text(textwrap.dedent('''
        from egovideo_jax.hod.narrators import register_narrator

        @register_narrator('echo_backend')
        class Echo:
            name = 'echo_backend'

            def __init__(self, model='echo-1'):
                self.model = model

            def narrate(self, narration, tracks, facts):
                return narration
    '''))
    monkeypatch.setattr(narrators, '__path__', [*narrators.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, 'egovideo_jax.hod.narrators.echo_backend', raising=False)
    monkeypatch.setattr(narrators, 'NARRATORS', dict(narrators.NARRATORS))
    assert 'echo_backend' in narrators.available_narrators()
    assert 'echo_backend' not in narrators.NARRATORS
    narrator = narrators.make_narrator('echo_backend', model='echo-2')
    assert narrator.model == 'echo-2' and narrator.narrate('hi', None, None) == 'hi'
    assert 'egovideo_jax.hod.narrators.echo_backend' in sys.modules


def test_register_narrator_refuses_a_second_factory(monkeypatch):
    monkeypatch.setattr(narrators, 'NARRATORS', dict(narrators.NARRATORS))
    with pytest.raises(ValueError, match="'rules' is already registered"):
        narrators.register_narrator('rules')(lambda: None)
    assert narrators.register_narrator('rules')(RulesNarrator) is RulesNarrator


def test_every_scenario_pairing_validates():
    """Rules narrations stay valid for every scripted motion given to either hand."""
    motions = {'still': still(0.5, 0.5), 'right': line([0.3, 0.5], [0.7, 0.5]),
               'up_left': up_then_left().boxes['left_hand'][:, :2] + 0.05,
               'shake': shake().boxes['right_hand'][:, :2] + 0.05}
    for (left_name, left), (right_name, right) in itertools.product(motions.items(), repeat=2):
        for contact in ({}, {'right': np.full(N, 3)}, {'left': held_from(12)}):
            tracks = scripted({'left_hand': left, 'right_hand': right, 'object': right},
                              contact)
            facts = motion_facts(tracks, TIMES)
            text = RulesNarrator().narrate('#C C takes the cup', tracks, facts)
            assert prompt.validate_narration(text, facts) == [], (left_name, right_name, text)
