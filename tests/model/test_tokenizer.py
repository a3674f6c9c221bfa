"""Tokenizers: CLIP BPE known answers and normalisation, SentencePiece training, the CLI."""

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece

from egovideo_jax.model.tokenizer import (
    CLIP_VOCAB_PATH,
    CLIP_VOCAB_SHA256,
    ClipTokenizer,
    SentencePieceTokenizer,
    get_tokenizer,
    tokenize,
    train_sentencepiece,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SOT, EOT = 49406, 49407

# Hand-derived ids. Byte symbols come in the order '!'..'~' first, so a one-character ASCII
# word c is 256 + ord(c) - ord('!') (its "</w>" form); a merge on line n of the vocab file
# (line 1 is the header) has id 512 + n - 2.
AMPERSAND = 256 + ord("&") - ord("!")          # 261
DIGIT = {d: 256 + ord(d) - ord("!") for d in "0123456789"}  # '2' -> 273
CAT = 512 + 1858 - 2                           # line 1858: "c at</w>" -> 2368
APOSTROPHE_S = 512 + 58 - 2                    # line 58: "' s</w>" -> 568

VERBS = ["picks up", "puts down", "opens", "closes", "cuts", "washes", "holds", "moves",
         "stirs", "wipes", "pours", "rinses", "folds", "turns on", "turns off", "scrolls",
         "presses", "drops", "lifts", "touches"]
OBJECTS = ["knife", "cup", "door", "onion", "plate", "drawer", "pan", "towel", "tap", "bowl",
           "carrot", "tomato", "spoon", "fork", "bottle", "phone", "laptop", "lid", "sponge",
           "kettle", "shirt", "brush", "pot", "jar", "cloth"]
ADJECTIVES = ["red", "blue", "small", "large", "wooden", "metal", "dirty", "clean", "green",
              "white"]
PLACES = ["on the table", "in the sink", "near the stove", "with the left hand",
          "with the right hand", "from the shelf", "into the fridge", "on the counter",
          "under the tap", "beside the oven"]
SPM_VOCAB_SIZE = 100  # the synthetic corpus supports about 107 unigram pieces


@pytest.fixture(scope="module")
def clip():
    return get_tokenizer("clip")


@pytest.fixture(scope="module")
def narrations():
    rng = random.Random(0)
    return [f"#C C {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)} "
            f"{rng.choice(PLACES)}" for _ in range(200)]


@pytest.fixture(scope="module")
def narration_file(tmp_path_factory, narrations):
    path = tmp_path_factory.mktemp("narrations") / "narrations.txt"
    path.write_text("\n".join(narrations) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory, narration_file):
    prefix = tmp_path_factory.mktemp("spm") / "nested" / "spm"
    return train_sentencepiece(narration_file, prefix, vocab_size=SPM_VOCAB_SIZE)


# CLIP BPE

def test_known_answer_photo_of_a_cat():
    tokens = tokenize("a photo of a cat")
    expected = np.zeros((1, 77), np.int32)
    expected[0, :7] = [SOT, 320, 1125, 539, 320, 2368, EOT]
    assert tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, expected)


def test_vocab_and_special_ids(clip):
    assert clip.vocab_size == 49408
    assert (clip.sot_token_id, clip.eot_token_id, clip.pad_id) == (SOT, EOT, 0)


@pytest.mark.parametrize("text, expected", [
    ("cat", [CAT]),
    ("&", [AMPERSAND]),
    ("2024", [DIGIT["2"], DIGIT["0"], DIGIT["2"], DIGIT["4"]]),  # digits are split one by one
    ("cat's", [CAT, APOSTROPHE_S]),  # the contraction is its own word, so "cat</w>" stays whole
    ("&amp;", [AMPERSAND]),
    ("&amp;amp;", [AMPERSAND]),  # unescaped twice
    ("<|endoftext|>", [EOT]),  # special tokens are never split
])
def test_hand_derived_ids(clip, text, expected):
    assert clip.encode(text) == expected


@pytest.mark.parametrize("messy, clean", [
    ("  A   PHOTO\n of\tA Cat  ", "a photo of a cat"),
    ("salt &amp; pepper", "salt & pepper"),
    ("cats &amp;amp; dogs", "cats & dogs"),
    ("cat's toy", "cat 's toy"),
    ("cafÃ©", "café"),  # mojibake repaired by ftfy
])
def test_normalisation_gives_the_clean_ids(clip, messy, clean):
    assert clip.encode(messy) == clip.encode(clean)


@pytest.mark.parametrize("text", ["a photo of a cat", "the person slices a red onion on the board",
                                  "naïve café au lait", "c picks up 3 cups"])
def test_encode_decode_round_trip(clip, text):
    assert clip.decode(clip.encode(text)) == text


def test_batch_shape_and_layout(clip):
    texts = ["a photo of a cat", "hello", "#C C opens the drawer with the left hand"]
    tokens = clip(texts)
    assert tokens.shape == (3, 77) and tokens.dtype == np.int32
    for row, text in zip(tokens, texts):
        ids = clip.encode(text)
        assert row[0] == SOT and row[len(ids) + 1] == EOT
        assert list(row[1:len(ids) + 1]) == ids and not row[len(ids) + 2:].any()
        assert np.argmax(row) == len(ids) + 1  # the text tower pools here
    assert clip("hello").shape == (1, 77)
    assert tokenize(texts[:2], context_length=16).shape == (2, 16)


def test_too_long_text_truncates_or_raises():
    texts = ["short", "word " * 100]
    tokens = tokenize(texts)
    assert tokens[1, 0] == SOT and tokens[1, 76] == EOT and tokens[1].all()
    with pytest.raises(ValueError, match=r"text 1 has 102 tokens"):
        tokenize(texts, truncate=False)


def test_corrupt_vocab_is_rejected(tmp_path):
    corrupt = tmp_path / CLIP_VOCAB_PATH.name
    shutil.copy(CLIP_VOCAB_PATH, corrupt)
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=CLIP_VOCAB_SHA256) as error:
        ClipTokenizer(vocab_path=corrupt)
    assert str(corrupt) in str(error.value) and "expected" in str(error.value)


def test_get_tokenizer_registry(clip, spm_model):
    assert get_tokenizer("clip") is clip
    assert isinstance(get_tokenizer(str(spm_model)), SentencePieceTokenizer)
    with pytest.raises(ValueError, match=r"'clip'.*'\.model'"):
        get_tokenizer("gpt2")


# SentencePiece

def test_sentencepiece_interface(spm_model, narrations):
    tokenizer = SentencePieceTokenizer(spm_model, context_length=32)
    assert tokenizer.vocab_size == SPM_VOCAB_SIZE
    assert tokenizer.eot_token_id == SPM_VOCAB_SIZE - 1  # highest id, for argmax pooling
    assert tokenizer.sot_token_id != tokenizer.eot_token_id and tokenizer.pad_id == 0

    tokens = tokenizer(narrations[:5])
    assert tokens.shape == (5, 32) and tokens.dtype == np.int32
    for row, text in zip(tokens, narrations):
        ids = tokenizer.encode(text)
        assert row[0] == tokenizer.sot_token_id and np.argmax(row) == len(ids) + 1
        assert not row[len(ids) + 2:].any()
        assert tokenizer.decode(ids) == text
    assert tokenizer(narrations[0], context_length=4)[0, 3] == tokenizer.eot_token_id
    with pytest.raises(ValueError, match="text 0 has"):
        tokenizer(narrations[0], context_length=4, truncate=False)


def test_sentencepiece_model_without_eos_last_warns_and_without_bos_fails(tmp_path, narration_file):
    def train_plain(name, **ids):
        sentencepiece.SentencePieceTrainer.train(
            input=str(narration_file), model_prefix=str(tmp_path / name),
            vocab_size=SPM_VOCAB_SIZE, minloglevel=2, **ids)
        return tmp_path / f"{name}.model"

    with pytest.warns(UserWarning, match="not the highest id"):
        SentencePieceTokenizer(train_plain("eos_early"))
    with pytest.raises(ValueError, match="must define bos and eos"):
        SentencePieceTokenizer(train_plain("no_bos", bos_id=-1))


def test_train_sentencepiece_input_errors(tmp_path, narration_file):
    with pytest.raises(FileNotFoundError, match="narration file not found"):
        train_sentencepiece(tmp_path / "missing.txt", tmp_path / "spm")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no text"):
        train_sentencepiece(empty, tmp_path / "spm")
    with pytest.raises(RuntimeError, match="smaller"):
        train_sentencepiece(narration_file, tmp_path / "spm", vocab_size=5000)


def _run_cli(*args):
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    return subprocess.run([sys.executable, "-m", "egovideo_jax.model.tokenizer", *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_trains_a_model(tmp_path, narration_file):
    prefix = tmp_path / "out" / "spm"
    result = _run_cli("train-sentencepiece", "--input", narration_file, "--model-prefix", prefix,
                      "--vocab-size", SPM_VOCAB_SIZE)
    assert result.returncode == 0, result.stderr
    assert f"wrote {prefix}.model" in result.stdout
    assert f"vocab size {SPM_VOCAB_SIZE}" in result.stdout
    assert SentencePieceTokenizer(f"{prefix}.model").eot_token_id == SPM_VOCAB_SIZE - 1


def test_cli_reports_a_missing_input(tmp_path):
    result = _run_cli("train-sentencepiece", "--input", tmp_path / "missing.txt",
                      "--model-prefix", tmp_path / "spm")
    assert result.returncode != 0
    assert "narration file not found" in result.stderr and "Traceback" not in result.stderr
