"""check_choice: silent for an allowed value, otherwise one message naming the field, the
value and the choices."""

import pytest

from egovideo_jax.io.choices import check_choice


@pytest.mark.parametrize('value, choices', [('single', ('single', 'slowfast')),
                                            (2, {1: 'inter', 2: 'intra'}),
                                            (None, (None, 'none'))])
def test_allowed_values_pass(value, choices):
    check_choice(value, choices, 'field')


def test_message_names_field_value_and_sorted_string_choices():
    with pytest.raises(ValueError) as error:
        check_choice('fastslow', ('slowfast', 'single'), 'config.model.mode')
    assert str(error.value) == "config.model.mode='fastslow'; choose from ['single', 'slowfast']"


def test_other_choices_keep_their_order():
    with pytest.raises(ValueError, match=r"^FILE, line 3: types=7; choose from \[2, 1\]$"):
        check_choice(7, {2: 'intra', 1: 'inter'}, 'FILE, line 3: types')
