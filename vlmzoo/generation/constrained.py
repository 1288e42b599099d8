"""Constrained decoding for closed-set detection and segmentation: only answers the task grammar allows.

With a fixed list of classes, a valid ``detect`` answer is a sequence of objects, each four ``<loc>``
tokens then `` {class}``, joined by `` ; `` and ended by ``<eos>`` (``segment``: four ``<loc>``, sixteen
``<seg>``, then the class). `ClosedSetSampler` is a sampler (registered as ``"closed_set"``) whose
``warp`` sets every token the grammar does not allow next to ``-inf``, so whatever sampler follows it
(greedy by default) can only write valid objects of the given classes: no cut-off box, no unknown
label, no stray text.

Labels are matched as text, not as one fixed tokenization: a label token is allowed when the text
written since the last ``<loc>``/``<seg>`` token, followed by that token's text, still begins one of
`` {class}``, `` {class} ;`` or `` {class} ; ``. The answer's start is found after the last newline
token of the prompt (PaliGemma prompts end with ``\\n``; class names cannot hold one).

    sampler = ClosedSetSampler(["cat", "dog"], processor)
    vlm.detect(image, ["cat", "dog"], sampler=sampler)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlmzoo.generation.samplers import Sampler

__all__ = ["ClosedSetSampler"]

_SEPARATORS = (" ;", " ; ")


class ClosedSetSampler(Sampler):
    """Allow only the next tokens of a valid answer naming ``classes`` (see the module docstring).

    Args:
        classes: the class names the answer may use (as in the prompt).
        processor: the model's processor (or anything with ``tokenizer`` and ``eos_token_id``): the
            ``<loc>``, ``<seg>``, ``<eos>`` and newline ids and each token's text come from its tokenizer.
        segment: also require sixteen ``<seg>`` tokens after the four ``<loc>`` tokens.
        no_match: a text the model was trained to write when nothing matches (``shapes-demo``: ``"none"``);
            allowed, then ``<eos>``, as a whole answer. None: only ``<eos>`` means nothing was found.
        max_new_tokens: the generation budget. Given, a new object is only begun when the budget has room
            to finish it (separator, boxes, the longest label one character per token, ``<eos>``), so
            an answer is never cut off inside an object. None: no such check (the caller's budget may cut).
    """

    stochastic = None  # greedy alone; sampling when chained with e.g. temperature

    def __init__(
        self,
        classes: Sequence[str],
        processor: Any,
        *,
        segment: bool = False,
        no_match: str | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        names = [" ".join(str(c).split()) for c in ([classes] if isinstance(classes, str) else classes)]
        if not names or not all(names) or any(";" in n or "\n" in n for n in names):
            raise ValueError(f"classes must be a non-empty list of names without ';' or newlines, got {classes!r}")
        self.classes = tuple(dict.fromkeys(names))
        self.segment = bool(segment)
        self.no_match = no_match
        self.max_new_tokens = max_new_tokens
        tokenizer = processor.tokenizer
        vocab_size = tokenizer.get_vocab_size()
        self._loc = torch.tensor([tokenizer.token_to_id(f"<loc{i:04d}>") for i in range(1024)])
        self._seg = torch.tensor([tokenizer.token_to_id(f"<seg{i:03d}>") for i in range(128)]) if segment else None
        if any(i is None for i in self._loc.tolist()):
            raise ValueError("the tokenizer has no <locNNNN> tokens; constrained detection needs them")
        self._eos = int(processor.eos_token_id)
        self._newline = tokenizer.encode("\n", add_special_tokens=False).ids[-1]
        self._loc_set = set(self._loc.tolist())
        self._seg_set = set(self._seg.tolist()) if self._seg is not None else set()
        special = self._loc_set | self._seg_set | {self._eos}
        # each ordinary token's text, as the decoder writes it (SentencePiece's ▁ is a space)
        self._text: dict[int, str] = {}
        by_text: dict[str, list[int]] = {}
        for token, index in tokenizer.get_vocab().items():
            if index in special or index >= vocab_size or (token.startswith("<") and token.endswith(">")):
                continue
            text = token.replace("\u2581", " ")
            self._text[index] = text
            by_text.setdefault(text, []).append(index)
        self._longest = max((len(t) for t in by_text), default=1)
        self._by_text = by_text
        labels = [" " + name for name in self.classes]
        self._targets = [label + sep for label in labels for sep in _SEPARATORS] + labels
        self._complete = set(labels)  # <eos> may follow
        self._separated = {label + sep for label in labels for sep in _SEPARATORS}  # a <loc> may follow
        starts = [] if no_match is None else [no_match, " " + no_match]
        self._no_match_targets = starts
        self._cache: dict[tuple[str, bool], list[int]] = {}
        # tokens one more object can take: " ; " (two tokens at most), boxes, a label, <eos>
        self._object_budget = 2 + 4 + (16 if segment else 0) + max(len(label) for label in labels) + 1

    def _continuations(self, written: str, at_start: bool) -> list[int]:
        """Ordinary tokens whose text extends ``written`` along some target (label or no-match text)."""
        key = (written, at_start)
        if key not in self._cache:
            allowed: set[int] = set()
            for target in self._no_match_targets if at_start else self._targets:
                if not target.startswith(written) or len(target) == len(written):
                    continue
                rest = target[len(written) :]
                for length in range(1, min(len(rest), self._longest) + 1):
                    allowed.update(self._by_text.get(rest[:length], ()))
            self._cache[key] = sorted(allowed)
        return self._cache[key]

    def allowed(self, answer: Sequence[int]) -> torch.Tensor:
        """The token ids the grammar allows after ``answer`` (the ids generated so far)."""
        locs = segs = 0
        written: str | None = None  # text since the last <loc>/<seg>; None before any object
        start_text = ""
        for token in answer:
            if token in self._loc_set:
                locs = locs + 1 if written is None and locs < 4 else 1
                segs, written = 0, None
            elif token in self._seg_set:
                segs += 1
            elif locs == 4:
                written = (written or "") + self._text.get(token, "")
            else:
                start_text += self._text.get(token, "")
        ids: list[int] = []
        room = self.max_new_tokens is None or self.max_new_tokens - len(answer) >= self._object_budget
        if locs == 0:  # the start of the answer
            if not start_text:
                ids = [*self._loc.tolist(), self._eos] if room else [self._eos]
            if start_text in self._no_match_targets:
                ids.append(self._eos)
            ids += self._continuations(start_text, at_start=True)
            return torch.tensor(sorted(set(ids)), dtype=torch.long)
        if locs < 4:
            return self._loc
        if self.segment and segs < 16:
            return self._seg  # type: ignore[return-value]
        written = written or ""
        if written in self._complete:
            ids.append(self._eos)
        if written in self._separated:
            ids += self._loc.tolist()
        continuations = self._continuations(written, at_start=False)
        if written in self._complete and not room:  # no room for another object: only a longer label or <eos>
            continuations = [
                i for i in continuations if any(label.startswith(written + self._text[i]) for label in self._complete)
            ]
        ids += continuations
        return torch.tensor(sorted(set(ids)), dtype=torch.long)

    def warp(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        for row, ids in enumerate(history.tolist()):
            start = len(ids) - ids[::-1].index(self._newline) if self._newline in ids else len(ids)
            allowed = self.allowed(ids[start:])
            if allowed.numel() == 0:  # cannot happen on a valid path; end the answer rather than fail
                allowed = torch.tensor([self._eos])
            keep[row, allowed.to(logits.device)] = True
        return logits.masked_fill(~keep, float("-inf"))
