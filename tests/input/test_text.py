"""The text of a clip: narrations lose Ego4D's speaker tag; texts become the model's token ids."""
import numpy as np

from egovideo_jax.input import text
from egovideo_jax.model.tokenizer import get_tokenizer


def test_clean_narration_drops_the_ego4d_tag():
    assert text.clean_narration('#C C opens the drawer ') == 'C opens the drawer'
    assert text.clean_narration('#O a man holds a cup') == 'a man holds a cup'
    assert text.clean_narration('C #unsure takes it') == 'C #unsure takes it'


def test_tokenize_gives_the_context_length_of_ids_of_the_named_tokenizer():
    tokens = text.tokenize('C opens the drawer', 'clip')
    assert tokens.shape == (text.CONTEXT_LENGTH,)
    expected = get_tokenizer('clip', context_length=text.CONTEXT_LENGTH)('C opens the drawer')
    np.testing.assert_array_equal(tokens, expected[0])
