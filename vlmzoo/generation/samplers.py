"""Token samplers: logit transforms that compose, and a final choice (argmax or a random draw).

Each sampler may reshape the logits (``warp``) and says whether it wants a random draw
(``stochastic``: True, False, or None for "no opinion"). A chain applies every warp in order and
draws at random only if some member asks to and none insists on greedy, so ``temperature + top_p``
samples, ``repetition_penalty`` alone stays greedy, and ``temperature=0`` is greedy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from vlmzoo.components import cpu_kernels
from vlmzoo.plugins import resolve_registries


class Sampler:
    """Base sampler: plain sampling from the softmax of the logits."""

    stochastic: bool | None = True

    def warp(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Transform float32 logits [B, V]; ``history`` [B, n] holds the prompt and the tokens so far.

        Left padding is not history: in a padded row its columns repeat the row's first real token, so a
        row's set of seen tokens is what it would be alone."""
        return logits

    def __call__(
        self, logits: torch.Tensor, history: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pick the next token [B] from ``logits`` [B, V]."""
        logits = self.warp(logits.float(), history)
        if not self.stochastic:
            chosen = cpu_kernels.argmax(logits)  # one pass on CPUs (PyTorch's argmax: 0.7 ms per 257k row)
            return logits.argmax(dim=-1) if chosen is None else chosen
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def __add__(self, other: Sampler) -> Chain:
        return Chain(self, other)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Greedy(Sampler):
    """Always the most likely token."""

    stochastic = False


class Temperature(Sampler):
    """Divide logits by ``temperature``; 0 means greedy."""

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.temperature = temperature
        self.stochastic = temperature > 0

    def warp(self, logits, history):
        return logits if self.temperature == 0 else logits / self.temperature


class TopK(Sampler):
    """Keep the ``top_k`` most likely tokens."""

    def __init__(self, top_k: int = 50) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def warp(self, logits, history):
        k = min(self.top_k, logits.shape[-1])
        threshold = logits.topk(k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < threshold, float("-inf"))


class TopP(Sampler):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches ``top_p``."""

    def __init__(self, top_p: float = 0.9) -> None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = top_p

    def warp(self, logits, history):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= self.top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


class MinP(Sampler):
    """Keep tokens whose probability is at least ``min_p`` times the top token's."""

    def __init__(self, min_p: float = 0.05) -> None:
        if not 0 <= min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")
        self.min_p = min_p

    def warp(self, logits, history):
        probs = logits.softmax(dim=-1)
        keep = probs >= self.min_p * probs.max(dim=-1, keepdim=True).values
        return logits.masked_fill(~keep, float("-inf"))


class RepetitionPenalty(Sampler):
    """Make tokens already seen less likely (divide positive logits, multiply negative ones)."""

    stochastic = None

    def __init__(self, repetition_penalty: float = 1.1) -> None:
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
        self.repetition_penalty = repetition_penalty

    def warp(self, logits, history):
        seen = logits.gather(-1, history)
        penalised = torch.where(seen > 0, seen / self.repetition_penalty, seen * self.repetition_penalty)
        return logits.scatter(-1, history, penalised)


class Chain(Sampler):
    """Several samplers applied in order; see the module docstring for how the final choice is made."""

    def __init__(self, *samplers: Sampler) -> None:
        flat: list[Sampler] = []
        for sampler in samplers:
            flat.extend(sampler.samplers if isinstance(sampler, Chain) else [sampler])
        self.samplers = tuple(flat)
        opinions = {s.stochastic for s in flat}
        self.stochastic = False if False in opinions else (True in opinions)

    def warp(self, logits, history):
        for sampler in self.samplers:
            logits = sampler.warp(logits, history)
        return logits


def _factory_options(factory: Callable[..., Sampler]) -> set[str]:
    return {
        name
        for name, param in inspect.signature(factory).parameters.items()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }


def make_sampler(spec: str | Sampler | None, registries=None, **options: Any) -> Sampler:
    """A sampler from a registry key (``"top_p"``), keys joined with ``+`` (``"temperature+top_p"``),
    or a `Sampler` object. ``options`` go to the samplers that take them (``temperature=0.7, top_p=0.9``)."""
    if spec is None:
        spec = "greedy"
    if isinstance(spec, Sampler):
        if options:
            raise TypeError(f"sampler options {sorted(options)} only apply when the sampler is given by name")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"sampler must be a name or a Sampler, got {type(spec).__name__}")
    registries = resolve_registries(registries)
    parts, used = [], set()
    for key in (k.strip() for k in spec.split("+")):
        factory = registries.sampler.get(key)
        accepted = _factory_options(factory) & set(options)
        used |= accepted
        parts.append(factory(**{name: options[name] for name in accepted}))
    unused = set(options) - used
    if unused:
        raise TypeError(
            f"sampler option(s) {sorted(unused)} are not taken by sampler {spec!r}; "
            f"e.g. sampler='temperature+top_p' takes temperature and top_p"
        )
    return parts[0] if len(parts) == 1 else Chain(*parts)
