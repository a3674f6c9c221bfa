"""The `rules` narrator: deterministic template narrations in the paper's style, from the
motion facts alone (no model; the offline default and the fallback for failed LLM answers).

`RulesNarrator().narrate(narration, tracks, facts) -> str`, e.g.
    "C picks up the red cup with the right hand and moves it to the left. Meanwhile, the left
    hand stays still."    /    "The right hand shakes the bottle rapidly."

- The object noun comes from the original narration (`parse_narration`: tags and the
  subject `C` dropped, the verb with its particle, the noun phrase up to the first
  preposition; 'the object' when there is none).
- The main hand is the active one (moved, held the object or grasped/released it) that held
  the object longest, then had the most contact events, then travelled farthest. Its sentence
  says, in order: how it moved before the first grasp/release ("reaches down"), each grasp
  ("picks up" for take-like verbs, else "grasps") and release ("puts it down"), and how it
  moved between and after them ("lifts it", "moves it to the left"); without events, its
  phases ("moves up and then to the left"); shakes and back-and-forth motions replace
  the directions. The subject is C when the hand grasps something, else the hand itself.
- The other hand, when seen, gets a "Meanwhile, the left hand ..." sentence; when no hand is
  active, the original action is restated and the seen hands are said to stay still.
Every narration it writes passes `prompt.validate_narration`.
"""
from __future__ import annotations

import dataclasses
import itertools

from egovideo_jax.hod.detections import HAND_SIDES
from egovideo_jax.hod.motion import STILL, MotionFacts, TrackFacts, direction_phrase
from egovideo_jax.hod.prompt import clean_narration
from egovideo_jax.hod.tracks import Tracks

RULES_VERSION = 'rules-v1'  # bump when a template changes: it keys the narration cache
_PARTICLES = frozenset({'up', 'down', 'out', 'off', 'away', 'back', 'over', 'around', 'on'})
_PREPOSITIONS = frozenset({'in', 'into', 'on', 'onto', 'from', 'with', 'to', 'at', 'by', 'for',
                           'under', 'inside', 'near', 'towards', 'toward', 'using', 'over'})
_DETERMINERS = frozenset({'the', 'a', 'an', 'his', 'her', 'their', 'its', 'my', 'some', 'this',
                          'that', 'these', 'those', 'another'})
_TAKE_VERBS = frozenset({'takes', 'picks', 'grabs', 'gets', 'collects', 'lifts', 'fetches'})
_PRONOUNS = ('it', 'them')
_AXIS_ADVERBS = {'horizontal': 'horizontally', 'vertical': 'vertically',
                 'diagonal': 'diagonally'}


@dataclasses.dataclass(frozen=True)
class ParsedNarration:
    verb: str  # third person, with its particle: 'picks up'; '' when the narration is empty
    object: str  # noun phrase with a determiner: 'the red cup'

    @property
    def pronoun(self) -> str:
        noun = self.object.split()[-1].lower()
        return _PRONOUNS[noun.endswith('s') and not noun.endswith('ss')]

    @property
    def takes(self) -> bool:
        """The verb is a take-like one, so a grasp reads as "picks up"."""
        return bool(self.verb) and self.verb.split()[0] in _TAKE_VERBS


def parse_narration(text: str) -> ParsedNarration:
    words = clean_narration(text).strip(' .!?').split()
    if words and words[0] == 'C':  # Ego4D's camera wearer
        words = words[1:]
    if not words:
        return ParsedNarration('', 'the object')
    verb, rest = [_third_person(words[0].lower())], words[1:]
    if rest and rest[0].lower() in _PARTICLES:
        verb.append(rest.pop(0).lower())
    noun = [word.strip(',;:') for word in
            itertools.takewhile(lambda word: word.lower() not in _PREPOSITIONS, rest)]
    noun = [word for word in noun if word]
    if not noun:
        return ParsedNarration(' '.join(verb), 'the object')
    if noun[0].lower() not in _DETERMINERS:
        noun.insert(0, 'the')
    return ParsedNarration(' '.join(verb), ' '.join(noun))


def _third_person(verb: str) -> str:
    if verb.endswith('s') and not verb.endswith('ss'):
        return verb
    if verb.endswith(('ss', 'sh', 'ch', 'x', 'o')):
        return verb + 'es'
    if verb.endswith('y') and verb[-2:-1] not in 'aeiou':
        return verb[:-1] + 'ies'
    return verb + 's'


class RulesNarrator:
    name = 'rules'
    model = RULES_VERSION

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        """`tracks` is unused: the facts carry all this narrator says."""
        parsed = parse_narration(narration)
        active = [side for side in HAND_SIDES if facts.active(side)]
        if not active:
            return _still_narration(parsed, facts)
        main = max(active, key=lambda side: (facts.held_frames[side], len(facts.events_of(side)),
                                             facts.hand(side).path_length, side == 'right'))
        sentences = [_hand_sentence(main, facts, parsed, lead=True)]
        other = HAND_SIDES[1 - HAND_SIDES.index(main)]
        if facts.hand(other).present:
            sentences.append('Meanwhile, ' + _hand_sentence(other, facts, parsed, lead=False))
        return ' '.join(sentences)


def _still_narration(parsed: ParsedNarration, facts: MotionFacts) -> str:
    seen = [side for side in HAND_SIDES if facts.hand(side).present]
    action = [f'C {parsed.verb} {parsed.object}.'] if parsed.verb else []
    if not seen:
        return ' '.join(action + ['No hands are in view.'])
    hands = 'Both hands stay' if len(seen) == 2 else f'The {seen[0]} hand stays'
    return ' '.join(action + [f'{hands} still.'])


class _ObjectMentions:
    """The noun phrase the first time, the pronoun after."""

    def __init__(self, parsed: ParsedNarration):
        self.parsed = parsed
        self.mentioned = False

    def __call__(self) -> str:
        if self.mentioned:
            return self.parsed.pronoun
        self.mentioned = True
        return self.parsed.object


def _hand_sentence(side: str, facts: MotionFacts, parsed: ParsedNarration, lead: bool) -> str:
    hand, events = facts.hand(side), facts.events_of(side)
    grasps = any(event.kind == 'grasp' for event in events)
    by_hand = f' with the {side} hand' if lead and grasps else ''
    subject = 'C' if by_hand else f'the {side} hand'
    target = _ObjectMentions(parsed)
    holding = events[0].kind == 'release' if events else facts.held_frames[side] > 0
    grasp_verb = 'picks up' if parsed.takes else 'grasps'

    if hand.oscillation:
        if events and events[0].kind == 'grasp':
            clauses = [_grasp(grasp_verb, target()) + by_hand, _oscillation(hand, target())]
        else:
            clauses = [_oscillation(hand, target() if holding or grasps else '') + by_hand]
    elif not events:
        directions = [phase.direction for phase in hand.phases if phase.direction != STILL]
        clauses = [_carry(directions, target()) if holding else _move(directions)]
    else:
        clauses = []
        if events[0].before != STILL:
            clauses.append(_carry([events[0].before], target()) if holding
                           else f'reaches {direction_phrase(events[0].before)}')
        for event in events:
            if event.kind == 'grasp':
                clauses.append(_grasp(grasp_verb, target()) + by_hand)
                by_hand = ''
            else:
                clauses.append(f'puts {target()} down')
            if event.after != STILL:
                clauses.append(_carry([event.after], target()) if event.kind == 'grasp'
                               else f'moves away {direction_phrase(event.after)}')
    sentence = f'{subject} {_join(clauses)}.'
    return sentence[0].upper() + sentence[1:] if lead else sentence


def _grasp(verb: str, target: str) -> str:
    if verb == 'picks up' and target in _PRONOUNS:  # "picks it up", not "picks up it"
        return f'picks {target} up'
    return f'{verb} {target}'


def _oscillation(hand: TrackFacts, target: str) -> str:
    if hand.oscillation == 'shakes':
        words = ['shakes', target, 'rapidly']
    else:
        words = ['moves', target, 'back and forth', _AXIS_ADVERBS[hand.axis]]
    return ' '.join(word for word in words if word)


def _carry(directions: list[str], target: str) -> str:
    if not directions:
        return f'holds {target}'
    if directions == ['up']:
        return f'lifts {target}'
    if directions == ['down']:
        return f'lowers {target}'
    return f'moves {target} ' + ' and then '.join(map(direction_phrase, directions))


def _move(directions: list[str]) -> str:
    if not directions:
        return 'stays still'
    return 'moves ' + ' and then '.join(map(direction_phrase, directions))


def _join(clauses: list[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ', '.join(clauses[:-1]) + ' and ' + clauses[-1]
