"""Checks made before and during generation, and the generation arguments transformers users type.

Up front: ``max_new_tokens`` must be a whole number that, with the prompt, fits the model's positions
(otherwise a typo of 100000 preallocates a huge cache and runs for many minutes before anything
shows). During: logits that are not finite stop generation with an error that names the likely cause,
instead of decoding garbage into an empty answer.

``do_sample``, ``temperature``, ``top_k``, ``top_p`` and ``num_beams`` mean what they mean in
transformers' ``generate`` when ``do_sample`` is given; without it vlmzoo's ``sampler=`` rules apply.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from vlmzoo.errors import GenerationError, UnsupportedArgumentError

__all__ = ["check_finite", "check_max_new_tokens", "hf_sampler_arguments"]

#: transformers' GenerationConfig defaults for the sampling warpers.
HF_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}


def check_max_new_tokens(max_new_tokens: Any, prompt_length: int, max_positions: int) -> None:
    """Raise before any work when ``max_new_tokens`` is not a whole number or does not fit the model."""
    whole = hasattr(max_new_tokens, "__index__") and not isinstance(max_new_tokens, (bool, torch.Tensor))
    if not whole:
        raise TypeError(f"max_new_tokens must be a whole number, got {max_new_tokens!r}")
    max_new_tokens = int(max_new_tokens)  # numpy integers too
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    room = max_positions - prompt_length
    if max_new_tokens > room:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} does not fit: the prompt already takes {prompt_length} of the model's "
            f"{max_positions} positions (image tokens included), so at most {max(room, 0)} new tokens can follow. "
            f"Ask for max_new_tokens <= {max(room, 0)}."
        )


def check_finite(logits: torch.Tensor, step: int, dtype: torch.dtype) -> None:
    """Stop generation when a row's logits hold NaN or infinity, naming the likely cause.

    One sum per row finds them (NaN and infinity survive a sum): far cheaper than testing every logit of
    a 257k vocabulary at every step. Only when a sum is not finite are the logits themselves checked
    (a sum of finite float16 logits can overflow; float16 is summed in float32 for that reason).
    """
    totals = logits.sum(dim=-1, dtype=torch.float32 if logits.dtype == torch.float16 else None)
    if bool(torch.isfinite(totals).all()):
        return
    finite = torch.isfinite(logits).all(dim=-1)
    if bool(finite.all()):
        return
    rows = [int(i) for i in (~finite).nonzero().flatten()[:8]]
    cause = (
        "float16 overflows in Gemma / Gemma 2 activations: load with dtype='bfloat16' or 'float32'"
        if dtype == torch.float16
        else "the weights hold NaN or infinite values (a damaged or badly converted checkpoint, or a "
        "diverged fine-tune): check them with torch.isfinite"
    )
    where = "the prompt" if step == 0 else f"new token {step}"
    raise GenerationError(
        f"the model produced non-finite logits (NaN or inf) at {where}, batch row(s) {rows}; likely cause: {cause}"
    )


def hf_sampler_arguments(sampler: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The sampler and sampler options after reading transformers' ``do_sample`` and ``num_beams``.

    With ``do_sample=True`` the sampler is temperature, then top-k, then top-p, with transformers'
    defaults (1.0, 50, 1.0) where not given (``top_k=0`` or ``None`` turns top-k off); ``do_sample=False``
    is greedy, and sampling options given with it are ignored with a warning, as in transformers.
    """
    options = dict(options)
    num_beams = options.pop("num_beams", None)
    if num_beams is not None and num_beams != 1:
        raise UnsupportedArgumentError(
            f"num_beams={num_beams}: beam search is not supported; use greedy decoding (the default) or "
            "sampling (do_sample=True, or sampler='temperature+top_p' with temperature= and top_p=)"
        )
    do_sample = options.pop("do_sample", None)
    if do_sample is None:
        return sampler, options
    if sampler not in (None, "greedy"):
        raise TypeError(f"got sampler={sampler!r} and do_sample={do_sample!r}; pass one of them")
    warpers = {name: options.pop(name) for name in list(HF_SAMPLING_DEFAULTS) if name in options}
    if not do_sample:
        if warpers:
            warnings.warn(
                f"do_sample=False decodes greedily, so {sorted(warpers)} are ignored (as in transformers); "
                "pass do_sample=True to sample",
                UserWarning,
                stacklevel=4,
            )
        return _with_penalty("greedy", options), options
    chosen = {**HF_SAMPLING_DEFAULTS, **{k: v for k, v in warpers.items() if v is not None}}
    if not chosen["temperature"] > 0:
        raise ValueError(
            f"temperature={chosen['temperature']!r} with do_sample=True: it must be > 0 (use do_sample=False "
            "for greedy decoding)"
        )
    parts, sampler_options = ["temperature"], {"temperature": chosen["temperature"]}
    if chosen["top_k"]:
        parts.append("top_k")
        sampler_options["top_k"] = chosen["top_k"]
    if chosen["top_p"] < 1.0:
        parts.append("top_p")
        sampler_options["top_p"] = chosen["top_p"]
    options.update(sampler_options)
    return _with_penalty("+".join(parts), options), options


def _with_penalty(spec: str, options: dict[str, Any]) -> str:
    """transformers applies ``repetition_penalty`` / ``min_p`` in greedy and sampled decoding alike."""
    for name in ("repetition_penalty", "min_p"):
        if options.get(name) is not None:
            spec = f"{name}+{spec}" if name == "repetition_penalty" else f"{spec}+{name}"
    return spec
