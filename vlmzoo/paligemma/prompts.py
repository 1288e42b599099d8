"""PaliGemma's prompt layout: where the image tokens, prompt and suffix go, how rows are padded, and which
positions carry a loss.

The layout is::

    <image> * num_image_tokens + <bos> + prompt + "\\n" [+ suffix + <eos>]

The prefix (image tokens, ``<bos>``, prompt and the newline) is tokenized as *one* string, exactly as
transformers does, so the newline may merge with the prompt's last characters in the BPE; the suffix
(with ``<eos>`` appended as text) is tokenized separately. Token type 0 marks the prefix (attended both
ways), 1 the suffix (causal, and the only part with labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

IGNORE_INDEX = -100

#: Tokens PaliGemma adds to Gemma's vocabulary: 1024 locations (boxes) and 128 mask codes (segmentation).
EXTRA_TOKENS = [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)]


def as_list(value: Any) -> list:
    """A list or tuple as a list; anything else as a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_prompts(prompts: str | Sequence[str], image_token: str) -> list[str]:
    """The prompts as a list of strings, a leading ``image_token`` (transformers' explicit form) removed."""
    prompts = as_list(prompts)
    if not prompts:
        raise ValueError("got an empty list of prompts; pass at least one prompt (it may be '').")
    out = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} is a {type(prompt).__name__}, expected a string.")
        # transformers accepts an explicit leading "<image>" placeholder; it means the same thing.
        if prompt.startswith(image_token):
            prompt = prompt[len(image_token) :]
        if image_token in prompt:
            raise ValueError(
                f"prompt {i} contains {image_token!r} in its text; the processor inserts the image "
                "tokens itself (one image per prompt). Remove it from the prompt."
            )
        out.append(prompt)
    return out


def check_suffixes(suffixes: str | Sequence[str], count: int) -> list[str]:
    """One suffix string per prompt."""
    suffix_list = as_list(suffixes)
    if len(suffix_list) != count:
        raise ValueError(
            f"got {len(suffix_list)} suffix(es) for {count} prompt(s); pass one suffix "
            "per prompt (or suffixes=None for inference)."
        )
    for i, suffix in enumerate(suffix_list):
        if not isinstance(suffix, str):
            raise TypeError(f"suffix {i} is a {type(suffix).__name__}, expected a string.")
    return suffix_list


def encode_example(
    tokenizer: Tokenizer,
    prompt: str,
    suffix: str | None,
    *,
    image_token: str,
    num_image_tokens: int,
    bos_token: str,
    eos_token: str,
) -> tuple[list[int], list[int]]:
    """Token ids and token type ids of one example laid out as above (no padding, no length check)."""
    prefix = image_token * num_image_tokens + bos_token + prompt + "\n"
    ids = tokenizer.encode(prefix, add_special_tokens=False).ids
    types = [0] * len(ids)
    if suffix is not None:
        suffix_ids = tokenizer.encode(suffix + eos_token, add_special_tokens=False).ids
        ids = ids + suffix_ids
        types = types + [1] * len(suffix_ids)
    return ids, types


def padded_width(lengths: list[int], padding: str | bool, max_length: int) -> int:
    """The row width of a batch: the longest row, ``max_length``, or the common length when not padding."""
    if padding in ("longest", True):
        return max(lengths)
    if padding == "max_length":
        return max_length
    if padding in (False, "do_not_pad"):
        if len(set(lengths)) > 1:
            raise ValueError(f"rows have different lengths {lengths} and padding is off; use padding='longest'.")
        return lengths[0]
    raise ValueError(f"padding={padding!r} is not supported; use 'longest', 'max_length' or False.")


def pad_rows(
    rows: list[tuple[list[int], list[int]]], width: int, pad_token_id: int, padding_side: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, token_type_ids)`` [B, width], each row padded on ``padding_side``.

    On the left (the default), the last position of every row is its last real token, which batched
    generation relies on.
    """
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    token_type_ids = torch.zeros((batch, width), dtype=torch.long)
    for b, (ids, types) in enumerate(rows):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[b, span] = torch.tensor(ids, dtype=torch.long)
        token_type_ids[b, span] = torch.tensor(types, dtype=torch.long)
        attention_mask[b, span] = 1
    return input_ids, attention_mask, token_type_ids


def suffix_labels(input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
    """Labels for training: the suffix's ids, `IGNORE_INDEX` on the prefix and the padding."""
    return input_ids.masked_fill(token_type_ids == 0, IGNORE_INDEX)
