"""Measure generation speed against the machine's own limit: a decode step must read every weight once.

`decode_weight_bytes` counts the bytes one decode step reads (the decoder's weights and the output
head, as stored: quantized weights at their packed size), `read_bandwidth` measures how fast this
machine reads memory right now, and `measure` times a model's time to first token and decode steps.
Their ratio, ``decode_weight_bytes / step time / read_bandwidth``, is the fraction of the bandwidth
bound a decode step reaches. Used by ``vlmzoo bench`` and ``benchmarks/generate_speed.py``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

#: Bytes summed per bandwidth sample: far beyond the last-level cache.
BANDWIDTH_BYTES = 2**30


def read_bandwidth(nbytes: int = BANDWIDTH_BYTES, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Memory read bandwidth in bytes/s: the faster of two ways of reading a large buffer once.

    ``tensor.sum()`` and a matrix-vector product over the same buffer are each timed (median of
    `repeats`). Either alone can fall short of what the memory delivers (``sum()`` reads a fifth slower
    than BLAS's matrix-vector product on some CPUs), and a bound below what a kernel reaches would put
    decode steps above 100% of it.
    """
    buffer = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    matrix = buffer.view(-1, 4096)
    vector = torch.ones(4096, dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    speeds = []
    for read in (buffer.sum, lambda: torch.mv(matrix, vector)):
        read()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            read()
            sync()
            times.append(time.perf_counter() - start)
        speeds.append(nbytes / statistics.median(times))
    return max(speeds)


def decode_weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: every decoder weight (a tied head counted once), as stored.

    The token embedding is counted whole because the tied output head reads all of it; the vision tower
    and projector are not, since only the prefill runs them.
    """
    decoder = model.language_model
    tensors = {id(t): t for t in (*decoder.parameters(), *decoder.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def random_inputs(config, batch: int, text_tokens: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch of random images and prompts (rows of different lengths) for ``config``."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for row in range(batch):
        length = text_tokens - (row % 4)
        vocab = config.decoder.vocab_size
        text = torch.randint(min(1000, vocab // 2), min(200000, vocab - 2), (max(length, 1),), generator=generator)
        image = torch.full((config.num_image_tokens,), config.image_token_id)
        rows.append(torch.cat([image, torch.tensor([config.bos_token_id]), text]))
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(batch, width, dtype=torch.long)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = ids
        attention_mask[row, width - len(ids) :] = 1
    size = config.vision.image_size
    pixel_values = torch.rand(batch, config.vision.num_channels, size, size, generator=generator) * 2 - 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": pixel_values,
    }


def token_times(model, inputs: dict[str, torch.Tensor], new_tokens: int, compile: bool = False) -> list[float]:
    """Greedy generation of ``new_tokens`` per row; the time (s, from the call) each token was ready."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    stamps = []
    for _ in model.stream(**inputs, max_new_tokens=new_tokens, stop_at_eos=False, compile=compile):
        sync()
        stamps.append(time.perf_counter() - start)
    return stamps


@dataclass
class Measurement:
    """Medians over the repeats: time to first token (s), decode step time (s), tokens/s over the batch."""

    ttft_s: float
    step_s: float
    batch: int

    @property
    def decode_tok_s(self) -> float:
        return self.batch / self.step_s


def summarize(runs: list[list[float]], batch: int) -> Measurement:
    """Median time to first token, and the median time between consecutive tokens over all runs."""
    steps = [b - a for stamps in runs for a, b in zip(stamps, stamps[1:], strict=False)]
    return Measurement(statistics.median(s[0] for s in runs), statistics.median(steps), batch)


def measure(model, inputs, new_tokens: int = 16, repeats: int = 3, compile: bool = False) -> Measurement:
    """Time ``repeats`` greedy runs after a warm-up run (which also makes the one-off kernel choices)."""
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    token_times(model, inputs, new_tokens, compile=compile)  # same shapes as the timed runs
    runs = [token_times(model, inputs, new_tokens, compile=compile) for _ in range(repeats)]
    return summarize(runs, len(inputs["input_ids"]))
