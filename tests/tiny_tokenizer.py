"""A tiny Gemma-like tokenizer and PaliGemma processor directory for tests.

The real PaliGemma tokenizer has 257k tokens; tests need something that builds in milliseconds, is
deterministic, and has the same *structure*: a byte-fallback BPE model with a normalizer that turns
spaces into "▁", special tokens ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, and the PaliGemma
extra tokens ``<loc0000>``..``<loc1023>``, ``<seg000>``..``<seg127>`` and ``<image>``.

Usage from other tests::

    from tiny_tokenizer import make_tiny_tokenizer, make_tiny_processor_dir

    tokenizer = make_tiny_tokenizer()                  # tokenizers.Tokenizer, nothing written
    vocab_size = make_tiny_tokenizer(tmp_path).get_vocab_size()   # also writes tokenizer files
    info = make_tiny_processor_dir(tmp_path / "proc", image_size=28, num_image_tokens=4)

``make_tiny_tokenizer`` needs only the ``tokenizers`` library; ``make_tiny_processor_dir`` uses
transformers (a test-only dependency) so that tests load files exactly as transformers writes them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, MASK]  # ids 0..4, in this order (as in Gemma)
LOC_TOKENS = [f"<loc{i:04d}>" for i in range(1024)]
SEG_TOKENS = [f"<seg{i:03d}>" for i in range(128)]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

#: Sentences the small BPE vocabulary is learned from: PaliGemma task prompts and typical answers.
CORPUS = [
    "caption en",
    "caption es",
    "describe en",
    "ocr",
    "answer en what is in the image?",
    "answer en how many cats are there?",
    "question en a cat",
    "detect cat ; dog",
    "detect person ; car ; bicycle",
    "segment cat",
    "a cat sitting on a bench",
    "a dog running in the park",
    "two cats and a dog are sitting on the grass",
    "the quick brown fox jumps over the lazy dog",
    "there is a red car next to a person on a bicycle",
    "What is the color of the sky? The sky is blue.",
    "Hello world, this is a tiny tokenizer for tests.",
]
NUM_MERGES = 120

TINY_VOCAB_SIZE: int  # set below: number of token ids (embedding rows needed)


def _learn_merges(corpus: list[str], num_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn BPE merges deterministically (ties broken lexicographically) inside "▁word" pieces."""
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for i, word in enumerate(line.split(" ")):
            piece = word if i == 0 else "▁" + word
            if piece:
                words[tuple(piece)] += 1
    alphabet = sorted({ch for word in words for ch in word} | {"▁"})
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for a, b in zip(word[:-1], word[1:], strict=True):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return alphabet, merges


def _build() -> Tokenizer:
    alphabet, merges = _learn_merges(CORPUS, NUM_MERGES)
    pieces = SPECIAL_TOKENS + BYTE_TOKENS + alphabet
    for a, b in merges:
        if a + b not in pieces:
            pieces.append(a + b)
    # Like the real Gemma vocabulary, the PaliGemma extra tokens are part of the model vocabulary too.
    pieces += LOC_TOKENS + SEG_TOKENS + [IMAGE_TOKEN]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=True, dropout=None)
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in LOC_TOKENS + SEG_TOKENS])
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return tok


def _tokenizer_config(tok: Tokenizer) -> dict:
    """A tokenizer_config.json in the form transformers' GemmaTokenizer (AutoTokenizer) loads."""
    added = {}
    for token_id, token in sorted(tok.get_added_tokens_decoder().items()):
        added[str(token_id)] = {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
    return {
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "mask_token": MASK,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "added_tokens_decoder": added,
    }


def make_tiny_tokenizer(directory: str | Path | None = None) -> Tokenizer:
    """Build the tiny Gemma-like tokenizer; if `directory` is given also write tokenizer files there.

    Writes ``tokenizer.json`` and ``tokenizer_config.json`` (loadable by ``tokenizers.Tokenizer.from_file``
    and by transformers' ``AutoTokenizer``). Returns the ``tokenizers.Tokenizer``; its
    ``get_vocab_size()`` (== ``TINY_VOCAB_SIZE``) is the number of embedding rows a model needs.
    Ids: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, ``<mask>``=4, then 256 byte-fallback tokens,
    the learned pieces, ``<loc0000>``.. , ``<seg000>``.. and ``<image>`` last.
    """
    tok = _build()
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tok.save(str(directory / "tokenizer.json"))
        with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(_tokenizer_config(tok), f, indent=2, ensure_ascii=False)
    return tok


TINY_VOCAB_SIZE = _build().get_vocab_size()


def make_tiny_processor_dir(
    directory: str | Path,
    image_size: int = 28,
    num_image_tokens: int = 4,
    max_position_embeddings: int | None = None,
) -> dict:
    """Write a complete PaliGemma processor directory with *transformers'* ``save_pretrained``.

    The directory holds tokenizer.json, tokenizer_config.json and processor_config.json (the image
    processor nested under ``image_processor``), exactly as transformers writes them. If
    `max_position_embeddings` is given a minimal ``config.json`` with
    ``text_config.max_position_embeddings`` is written too. Returns a dict with ``path``,
    ``vocab_size``, ``image_size``, ``num_image_tokens``, ``image_token_id``, ``pad_token_id``,
    ``bos_token_id``, ``eos_token_id``.
    """
    from transformers import AutoTokenizer, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    directory = Path(directory)
    tok_dir = directory / "_tokenizer_src"
    tok = make_tiny_tokenizer(tok_dir)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=num_image_tokens,
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=hf_tokenizer)
    processor.save_pretrained(str(directory))
    for child in tok_dir.iterdir():
        child.unlink()
    tok_dir.rmdir()
    if max_position_embeddings is not None:
        config = {
            "model_type": "paligemma",
            "text_config": {"max_position_embeddings": max_position_embeddings},
        }
        with open(directory / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
    return {
        "path": directory,
        "vocab_size": tok.get_vocab_size(),
        "image_size": image_size,
        "num_image_tokens": num_image_tokens,
        "image_token_id": tok.token_to_id(IMAGE_TOKEN),
        "pad_token_id": tok.token_to_id(PAD),
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
    }


def make_tiny_checkpoint(directory, *, seed: int = 3, transform=None):
    """A complete tiny vlmzoo checkpoint (paligemma2-tiny at 28 px, 4 image tokens) with this tokenizer.

    ``transform(model)`` may change the random model before it is saved (e.g. perturb its weights).
    """
    import vlmzoo

    facts = make_tiny_processor_dir(directory, image_size=28, num_image_tokens=4)
    config = vlmzoo.get_config("paligemma2-tiny").with_overrides(
        {"vision": {"image_size": 28}, "decoder": {"vocab_size": facts["vocab_size"]},
         "image_token_id": facts["image_token_id"]}
    )  # fmt: skip
    model = vlmzoo.build(config, seed=seed)
    (transform(model) if transform else model).save_pretrained(directory)
    return directory
