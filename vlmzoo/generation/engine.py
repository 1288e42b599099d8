"""The generation loop: one prefill over the prompt (image included), then one token per step.

The prefill runs the vision tower and the prefix once with the prefix-LM mask and fills a
preallocated `KVCache`; each decode step embeds one token per row, attends to the cache and picks
the next token with a sampler. Rows of a left-padded batch are independent: every row gets the
tokens it would get alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vlmzoo.generation.cache import KVCache
from vlmzoo.generation.checks import check_finite, check_max_new_tokens, hf_sampler_arguments
from vlmzoo.generation.samplers import Sampler, make_sampler


class PrefixLM(Protocol):
    """What generation reads of a model (a `PaliGemma`, or any assembly with the same parts), so this layer
    needs no family's model class: its config (``decoder``, ``eos_token_ids``, ``pad_token_id``), device,
    decoder (``language_model``), and the inputs and masks it prepares for a prefix-LM pass."""

    config: Any
    language_model: Any

    @property
    def device(self) -> torch.device: ...

    def prepare(self, input_ids, pixel_values=None, attention_mask=None, token_type_ids=None) -> Any: ...

    def masks(self, prepared: Any) -> dict: ...


@dataclass
class GenerationStep:
    """One decode step: the token chosen for each row (padding for rows already finished), whether each
    row has stopped, and the float32 logits [B, V] the choice was made from (before any sampler warp)."""

    index: int
    tokens: torch.Tensor
    finished: torch.Tensor
    logits: torch.Tensor


def decode_step(decoder, tokens: torch.Tensor, masks, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One token per row through the decoder, reading and filling ``cache``: the logits [B, V].

    Everything that changes from step to step arrives as a tensor (the cache's slot for this column
    included), so one compiled graph serves every step of a run.
    """
    hidden = decoder(decoder.embed(tokens[:, None]), masks, positions, cache)
    return decoder.logits(hidden[:, -1])


_compiled_step = None


def compiled_decode_step():
    """`decode_step` under ``torch.compile`` (compiled once per process, on first use, for each shape)."""
    global _compiled_step
    if _compiled_step is None:
        _compiled_step = torch.compile(decode_step)
    return _compiled_step


def _stop_ids(eos_token_id: int | Sequence[int] | None, default: Sequence[int], device: torch.device) -> torch.Tensor:
    ids = default if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
    return torch.tensor(list(ids), dtype=torch.long, device=device)


def _prompt_history(input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The prompt as samplers see it: each left-padding column holds the row's first real token instead,
    so the set of tokens a row has seen (what a repetition penalty uses) is the same as for the row alone."""
    first_real = input_ids.gather(1, valid.long().argmax(dim=1, keepdim=True))
    return torch.where(valid, input_ids, first_real)


def stream(
    model: PrefixLM,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 32,
    sampler: str | Sampler | None = "greedy",
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    compile: bool = False,
    **sampler_options,
) -> Iterator[GenerationStep]:
    """Yield a `GenerationStep` as each token is made; stops when every row has stopped.

    Raises before any work when ``max_new_tokens`` with the prompt exceeds the model's positions, and
    `GenerationError` as soon as the logits are not finite. ``do_sample``, ``temperature``, ``top_k``,
    ``top_p`` and ``num_beams`` also take transformers' meaning (see `vlmzoo.generation.checks`).
    ``compile=True`` runs the decode steps through `torch.compile` (the first step, and the prefill,
    stay eager); the first run pays the compilation, and later runs of the same shapes reuse it.
    """
    sampler, sampler_options = hf_sampler_arguments(sampler, sampler_options)
    check_max_new_tokens(max_new_tokens, input_ids.shape[-1], model.config.decoder.max_position_embeddings)
    max_new_tokens = int(max_new_tokens)
    choose = make_sampler(sampler, **sampler_options)
    config = model.config
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        if not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "generation needs left padding: every row's last column must be a real token "
                "(attention_mask[:, -1] == 1). Pad on the left, as the processor does."
            )
    batch, prompt_length = input_ids.shape
    stop_ids = _stop_ids(eos_token_id, config.eos_token_ids, device)
    pad = config.pad_token_id if pad_token_id is None else pad_token_id
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    decoder = model.language_model

    with torch.inference_mode():
        prepared = model.prepare(input_ids, pixel_values, attention_mask, token_type_ids)
        cache = KVCache(config.decoder, batch, prompt_length + max_new_tokens, prepared.embeds.dtype, device)
        cache.begin(prompt_length, prepared.valid)
        hidden = decoder(prepared.embeds, model.masks(prepared), prepared.positions, cache)
        cache.advance(prompt_length)
        logits = decoder.logits(hidden[:, -1])
        check_finite(logits, 0, prepared.embeds.dtype)
        positions = prepared.positions[:, -1:] + 1
        history = torch.full((batch, prompt_length + max_new_tokens), pad, dtype=torch.long, device=device)
        history[:, :prompt_length] = _prompt_history(input_ids, prepared.valid)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)

    for index in range(max_new_tokens):
        with torch.inference_mode():
            tokens = choose(logits, history[:, : prompt_length + index], generator)
            if stop_at_eos:
                tokens = torch.where(finished, torch.full_like(tokens, pad), tokens)
                finished = finished | torch.isin(tokens, stop_ids)
            history[:, prompt_length + index] = tokens
        yield GenerationStep(index, tokens, finished.clone(), logits.float())
        if index == max_new_tokens - 1 or (stop_at_eos and bool(finished.all())):
            return
        with torch.inference_mode():
            cache.begin(1)
            step = compiled_decode_step() if compile and index > 0 else decode_step
            logits = step(decoder, tokens, cache.decode_masks(), positions, cache)
            cache.advance(1)
            check_finite(logits, index + 1, prepared.embeds.dtype)
            positions = positions + 1


def generate(
    model: PrefixLM,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 32,
    sampler: str | Sampler | None = "greedy",
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    callback: Callable[[GenerationStep], None] | None = None,
    compile: bool = False,
    **sampler_options: Any,
) -> torch.Tensor:
    """The new tokens only, [B, n]; rows that stopped early are padded with the pad token.

    Args:
        model: a `PaliGemma` model.
        input_ids: prompt token ids [B, T], left-padded (as the processor makes them).
        pixel_values: images [B, 3, H, W], or None for text only.
        attention_mask: 1 on real tokens, 0 on padding (default: all ones).
        token_type_ids: 0 on the prefix, 1 on a suffix (default: all prefix).
        max_new_tokens: the most tokens to generate per row.
        sampler: a sampler name (``"greedy"``, ``"temperature+top_p"``) or object.
        stop_at_eos: stop a row at its end token, and the batch when every row has stopped.
        eos_token_id: the end token(s) (default: the config's).
        pad_token_id: what stopped rows get (default: the config's).
        seed: seeds the sampler's random numbers, for the same tokens every time.
        callback: called with each `GenerationStep`.
        compile: run the decode steps through ``torch.compile``.
        **sampler_options: the sampler's own options (``temperature``, ``top_k``, ``top_p``...).
    """
    columns = []
    for step in stream(
        model,
        input_ids,
        pixel_values,
        attention_mask,
        token_type_ids,
        max_new_tokens=max_new_tokens,
        sampler=sampler,
        stop_at_eos=stop_at_eos,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        seed=seed,
        compile=compile,
        **sampler_options,
    ):
        columns.append(step.tokens)
        if callback is not None:
            callback(step)
    return torch.stack(columns, dim=1)
