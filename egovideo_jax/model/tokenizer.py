"""Text tokenizers for the text tower: CLIP byte-level BPE and user-trained SentencePiece.

Both tokenizers share one interface: ``encode(text) -> list[int]`` (no start/end tokens),
``decode(ids) -> str``, and ``tokenizer(texts) -> int32 [B, context_length]`` holding
``[SOT] ids [EOT]`` padded with ``pad_id``. The text tower pools the hidden state at
``argmax(token_ids)``, so the end-of-text id must be the highest id in the vocabulary.

CLI: ``python -m egovideo_jax.model.tokenizer train-sentencepiece --input narrations.txt
--model-prefix out/spm --vocab-size 1000``.
"""

from __future__ import annotations

import abc
import argparse
import functools
import gzip
import hashlib
import html
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import ftfy
import numpy as np
import regex
import sentencepiece

DEFAULT_CONTEXT_LENGTH = 77

CLIP_VOCAB_PATH = Path(__file__).resolve().parents[2] / "data" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CLIP_MERGE_COUNT = 48894  # 256 bytes + 256 word-final bytes + merges + 2 specials = 49408
CLIP_START_TOKEN = "<|startoftext|>"
CLIP_END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"

# Special tokens first so that they survive as whole words; then contractions, letter runs,
# single digits and runs of other non-space characters.
_CLIP_WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE_RUN = regex.compile(r"\s+")


def _byte_to_symbol_table() -> dict[int, str]:
    """Map every byte to a printable unicode character, so BPE never sees whitespace/control.

    Printable Latin-1 bytes stand for themselves; the remaining 68 bytes are shifted to code
    points 256, 257, ... in byte order. The dict's order (printable bytes first) is the order
    of the 256 base symbols in the CLIP vocabulary.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = (byte for byte in range(256) if byte not in table)
    table.update({byte: chr(256 + offset) for offset, byte in enumerate(shifted)})
    return table


def _clean_text(text: str) -> str:
    text = ftfy.fix_text(text)
    # Twice: captions scraped from the web are often escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(text))
    return _WHITESPACE_RUN.sub(" ", text.strip()).lower()


class _TokenizerBase(abc.ABC):
    """Batch tokenization shared by both tokenizers; subclasses define the vocabulary."""

    def __init__(self, context_length: int):
        self.context_length = context_length

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOT/EOT."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def sot_token_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def eot_token_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def pad_id(self) -> int: ...

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = True) -> np.ndarray:
        """Token ids ``[SOT] ids [EOT]`` padded with ``pad_id``: int32 ``[B, context_length]``.

        Too-long texts are cut so that the last position holds EOT when ``truncate``; otherwise
        they raise ValueError.
        """
        context_length = self.context_length if context_length is None else context_length
        if context_length < 2:
            raise ValueError(f"context_length must fit SOT and EOT, got {context_length}")
        if isinstance(texts, str):
            texts = [texts]
        batch = np.full((len(texts), context_length), self.pad_id, dtype=np.int32)
        for index, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {index} has {len(ids)} tokens including SOT/EOT, more than "
                        f"context_length={context_length}; pass truncate=True to cut it")
                ids = ids[:context_length - 1] + [self.eot_token_id]
            batch[index, :len(ids)] = ids
        return batch


class ClipTokenizer(_TokenizerBase):
    """CLIP byte-level BPE over ``bpe_simple_vocab_16e6.txt.gz`` (vocabulary of 49408).

    The pad id 0 is also the token ``!``: drop padding before ``decode``.
    """

    def __init__(self, vocab_path: str | Path | None = None,
                 context_length: int = DEFAULT_CONTEXT_LENGTH):
        super().__init__(context_length)
        vocab_path = Path(vocab_path) if vocab_path is not None else CLIP_VOCAB_PATH
        if not vocab_path.is_file():
            raise FileNotFoundError(
                f"CLIP BPE vocabulary not found at {vocab_path}; see data/README.md for where "
                f"to get bpe_simple_vocab_16e6.txt.gz")
        compressed = vocab_path.read_bytes()
        actual_sha256 = hashlib.sha256(compressed).hexdigest()
        if actual_sha256 != CLIP_VOCAB_SHA256:
            raise ValueError(
                f"CLIP BPE vocabulary {vocab_path} has sha256 {actual_sha256}, expected "
                f"{CLIP_VOCAB_SHA256}; the file is corrupt or a different vocabulary")

        # Line 0 is a version header; the next CLIP_MERGE_COUNT lines are the merges in rank order.
        lines = gzip.decompress(compressed).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:CLIP_MERGE_COUNT + 1]]

        self._byte_to_symbol = _byte_to_symbol_table()
        self._symbol_to_byte = {symbol: byte for byte, symbol in self._byte_to_symbol.items()}
        base_symbols = list(self._byte_to_symbol.values())
        tokens = [*base_symbols, *(symbol + WORD_END for symbol in base_symbols),
                  *("".join(merge) for merge in merges), CLIP_START_TOKEN, CLIP_END_TOKEN]
        self._token_to_id = {token: index for index, token in enumerate(tokens)}
        self._id_to_token = tokens
        self._merge_rank = {merge: rank for rank, merge in enumerate(merges)}
        # Words seen before, BPE-split; seeded so special tokens are never split.
        self._bpe_cache = {CLIP_START_TOKEN: [CLIP_START_TOKEN], CLIP_END_TOKEN: [CLIP_END_TOKEN]}

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    @property
    def sot_token_id(self) -> int:
        return self._token_to_id[CLIP_START_TOKEN]

    @property
    def eot_token_id(self) -> int:
        return self._token_to_id[CLIP_END_TOKEN]

    @property
    def pad_id(self) -> int:
        return 0

    def _bpe(self, word: str) -> list[str]:
        """Split a byte-symbol word into vocabulary tokens, merging the lowest-ranked pair first."""
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + WORD_END]
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda pair: self._merge_rank.get(pair, float("inf")))
            if best not in self._merge_rank:
                break
            merged = []
            position = 0
            while position < len(parts):
                if position + 1 < len(parts) and (parts[position], parts[position + 1]) == best:
                    merged.append(parts[position] + parts[position + 1])
                    position += 2
                else:
                    merged.append(parts[position])
                    position += 1
            parts = merged
        self._bpe_cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in _CLIP_WORD_PATTERN.findall(_clean_text(text)):
            symbols = "".join(self._byte_to_symbol[byte] for byte in word.encode("utf-8"))
            ids.extend(self._token_to_id[token] for token in self._bpe(symbols))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; word ends become spaces and the trailing one is dropped."""
        data = bytearray()
        for token_id in ids:
            token = self._id_to_token[int(token_id)]
            if token in (CLIP_START_TOKEN, CLIP_END_TOKEN):
                # Special tokens are not made of byte symbols; keep their literal text.
                data.extend(token.encode("utf-8"))
                continue
            ends_word = token.endswith(WORD_END)
            symbols = token[:-len(WORD_END)] if ends_word else token
            data.extend(self._symbol_to_byte[symbol] for symbol in symbols)
            if ends_word:
                data.extend(b" ")
        return data.decode("utf-8", errors="replace").rstrip(" ")


class SentencePieceTokenizer(_TokenizerBase):
    """The tokenizer interface over a user-trained SentencePiece ``.model`` file.

    SOT/EOT are the model's bos/eos ids (both must be defined); padding is the model's pad id,
    or 0 when it has none. The text tower pools at ``argmax(token_ids)``, which finds EOT only
    when the eos id is the highest id: train with eos as the last id (``train_sentencepiece``
    does), or give the model the pooling index some other way. A model whose eos is not the
    highest id loads with a warning.
    """

    def __init__(self, model_path: str | Path, context_length: int = DEFAULT_CONTEXT_LENGTH):
        super().__init__(context_length)
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        # sentencepiece reports an undefined special id as -1.
        if self._processor.bos_id() < 0 or self._processor.eos_id() < 0:
            raise ValueError(
                f"SentencePiece model {model_path} must define bos and eos ids (got bos="
                f"{self._processor.bos_id()}, eos={self._processor.eos_id()}); retrain it with "
                f"train_sentencepiece")
        if self.eot_token_id != self.vocab_size - 1:
            warnings.warn(
                f"SentencePiece model {model_path} has eos id {self.eot_token_id}, not the highest "
                f"id {self.vocab_size - 1}: argmax(token_ids) pooling will not find the end token",
                stacklevel=2)

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def sot_token_id(self) -> int:
        return self._processor.bos_id()

    @property
    def eot_token_id(self) -> int:
        return self._processor.eos_id()

    @property
    def pad_id(self) -> int:
        return max(self._processor.pad_id(), 0)

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(token_id) for token_id in ids])


def train_sentencepiece(input_file: str | Path, model_prefix: str | Path, vocab_size: int = 8000,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        **trainer_options) -> Path:
    """Train a SentencePiece model on a text file (one narration a line); returns the ``.model``.

    Ids: pad 0 (as CLIP), unk 1, bos 2, eos ``vocab_size - 1`` so that the text tower's
    ``argmax(token_ids)`` pooling finds the end token. ``trainer_options`` go to
    ``sentencepiece.SentencePieceTrainer.train`` unchanged.
    """
    input_file = Path(input_file)
    if not input_file.is_file():
        raise FileNotFoundError(f"narration file not found: {input_file}")
    with input_file.open(encoding="utf-8") as lines:
        if not any(line.strip() for line in lines):
            raise ValueError(f"narration file has no text: {input_file}")
    if vocab_size < 4:
        raise ValueError(f"vocab_size must leave room for pad, unk, bos and eos, got {vocab_size}")

    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    options = {"minloglevel": 1, **trainer_options}  # warnings only; training logs are long
    try:
        sentencepiece.SentencePieceTrainer.train(
            input=str(input_file), model_prefix=str(model_prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            pad_id=0, unk_id=1, bos_id=2, eos_id=vocab_size - 1, **options)
    except RuntimeError as error:
        # With eos pinned to the last id, a vocabulary the corpus cannot fill fails with an
        # internal check instead of sentencepiece's usual "Vocabulary size too high".
        raise RuntimeError(
            f"SentencePiece training on {input_file} failed with vocab_size={vocab_size}: "
            f"{error}. The usual cause is a vocab_size larger than the text supports; try a "
            f"smaller one") from error
    return model_prefix.with_name(model_prefix.name + ".model")


@functools.lru_cache(maxsize=None)
def _shared_clip_tokenizer(context_length: int = DEFAULT_CONTEXT_LENGTH) -> ClipTokenizer:
    return ClipTokenizer(context_length=context_length)


_NAMED_TOKENIZERS: dict[str, Callable[[int], _TokenizerBase]] = {"clip": _shared_clip_tokenizer}
_TOKENIZERS_BY_SUFFIX: dict[str, Callable[[str, int], _TokenizerBase]] = {
    ".model": SentencePieceTokenizer,
}


def get_tokenizer(name: str = "clip",
                  context_length: int = DEFAULT_CONTEXT_LENGTH) -> _TokenizerBase:
    """A tokenizer by name (``'clip'``) or by file path (``*.model`` for SentencePiece)."""
    if name in _NAMED_TOKENIZERS:
        return _NAMED_TOKENIZERS[name](context_length)
    suffix = Path(name).suffix
    if suffix in _TOKENIZERS_BY_SUFFIX:
        return _TOKENIZERS_BY_SUFFIX[suffix](name, context_length)
    choices = [*map(repr, _NAMED_TOKENIZERS),
               *(f"a path ending in {suffix!r}" for suffix in _TOKENIZERS_BY_SUFFIX)]
    raise ValueError(f"unknown tokenizer {name!r}; choose {' or '.join(choices)}")


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH,
             truncate: bool = True) -> np.ndarray:
    """CLIP token ids, int32 ``[B, context_length]``: ``[SOT] ids [EOT]`` zero-padded."""
    return _shared_clip_tokenizer()(texts, context_length=context_length, truncate=truncate)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m egovideo_jax.model.tokenizer",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train-sentencepiece",
                                help="train a SentencePiece model on narrations, one per line")
    train.add_argument("--input", required=True, help="text file, one narration per line")
    train.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument("--model-type", default="unigram",
                       choices=["unigram", "bpe", "char", "word"])
    train.add_argument("--character-coverage", type=float, default=1.0)
    args = parser.parse_args(argv)

    try:
        model_path = train_sentencepiece(args.input, args.model_prefix, vocab_size=args.vocab_size,
                                         model_type=args.model_type,
                                         character_coverage=args.character_coverage)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    tokenizer = SentencePieceTokenizer(model_path)
    print(f"wrote {model_path} (vocab size {tokenizer.vocab_size})")


if __name__ == "__main__":
    main()
