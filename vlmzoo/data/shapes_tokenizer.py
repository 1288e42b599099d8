"""A small Gemma-shaped tokenizer for the shapes demo: a few hundred pieces instead of 257 152.

Its embedding table is what keeps the bundled ``shapes-demo`` checkpoint a few megabytes. It keeps
what vlmzoo's processor and task parsers rely on, with the same conventions as Gemma's: ``<pad>``=0,
``<eos>``=1, ``<bos>``=2, ``<unk>``=3; spaces become "▁" and are decoded back; byte fallback, so any
text encodes without ``<unk>``; the ``<loc0000>``..``<loc1023>`` and ``<seg000>``..``<seg127>``
tokens; ``<image>``; and "\\n", which ends every prompt. The BPE merges build each demo word, with
and without its leading space, into one piece; other text falls back to characters and bytes.
"""

from __future__ import annotations

import string
from collections import Counter

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

__all__ = ["SPECIAL_TOKENS", "WORDS", "build_tokenizer"]

#: Special tokens, with the ids Gemma gives them (0..3).
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
#: Words of the demo's prompts and answers: each becomes one token.
WORDS = (
    "detect", "segment", "caption", "describe", "answer", "question", "en", "a", "an", "and", "two", "three",
    "red", "green", "blue", "yellow", "circle", "square", "triangle", "circles", "squares", "triangles",
    "shape", "shapes", "none", ";",
)  # fmt: skip
IMAGE_TOKEN = "<image>"
LOC_TOKENS = tuple(f"<loc{i:04d}>" for i in range(1024))
SEG_TOKENS = tuple(f"<seg{i:03d}>" for i in range(128))
_SPACE = "▁"
_ALPHABET = [_SPACE, "\n", *sorted(set(string.printable) - set(string.whitespace))]


def _word_merges() -> list[tuple[str, str]]:
    """BPE merges learned until every word of :data:`WORDS`, plain and "▁"-prefixed, is one piece.

    Plain BPE training (most frequent pair first, ties broken alphabetically), so applying the merges
    in rank order reproduces the training segmentation: each word comes out whole.
    """
    words = [tuple(form) for word in WORDS for form in (word, _SPACE + word)]
    merges: list[tuple[str, str]] = []
    while any(len(word) > 1 for word in words):
        pairs = Counter(pair for word in words for pair in zip(word[:-1], word[1:], strict=True))
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = [_merge(word, best) for word in words]
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if word[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def build_tokenizer() -> Tokenizer:
    """The shapes-demo tokenizer; deterministic, so the same ids come out on every machine.

    Ids: the 4 special tokens, 256 byte-fallback tokens ``<0x00>``.., the characters, the merged pieces,
    then ``<loc0000>``.., ``<seg000>``.. and ``<image>`` last.
    """
    merges = _word_merges()
    pieces = list(SPECIAL_TOKENS) + [f"<0x{i:02X}>" for i in range(256)] + _ALPHABET
    for a, b in merges:
        if a + b not in pieces:
            pieces.append(a + b)
    pieces += [*LOC_TOKENS, *SEG_TOKENS, IMAGE_TOKEN]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", _SPACE)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in LOC_TOKENS + SEG_TOKENS])
    tokenizer.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return tokenizer
