"""Training throughput: one optimizer step of vlmzoo's trainer loss against transformers, same checkpoint and batch.

Builds a PaliGemma 2-shaped model (a few layers, random weights, smaller widths by default so a CPU
finishes in a minute), saves it once, loads it with both libraries in float32 and times full training
steps alternately in one process: forward, loss on the suffix, backward, AdamW. vlmzoo runs
`vlmzoo.training.SuffixLoss`, exactly what `vlmzoo train` runs per micro-batch (logits only where a
suffix token is predicted); transformers runs ``model(**inputs, labels=labels).loss``. Tokens/s counts
the real (unpadded) tokens of the batch, image tokens included, as the trainer's progress bar does.

    python benchmarks/train_throughput.py                       # small widths, batch 4, 224 px
    python benchmarks/train_throughput.py --preset real --text-layers 2 --vision-layers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

import vlmzoo
from vlmzoo.training import SuffixLoss

PRESETS = {
    # Real PaliGemma 2 3B widths and vocabulary.
    "real": {"vision": {}, "decoder": {}},
    # A tenth of the widths, 16k vocabulary: the same code paths, a CPU-sized step.
    "small": {
        "vision": {"hidden_size": 384, "intermediate_size": 1536, "num_heads": 6},
        "decoder": {"hidden_size": 512, "intermediate_size": 2048, "num_heads": 8, "num_kv_heads": 4,
                    "head_dim": 64, "query_pre_attn_scalar": 64, "vocab_size": 16384},
        "image_token_id": 16383,
    },
}  # fmt: skip


def make_checkpoint(directory: str, preset: str, vision_layers: int, text_layers: int) -> None:
    spec = PRESETS[preset]
    overrides = {
        "vision": {**spec["vision"], "num_layers": vision_layers},
        "decoder": {**spec["decoder"], "num_layers": text_layers},
    }
    if "image_token_id" in spec:
        overrides["image_token_id"] = spec["image_token_id"]
    base = vlmzoo.get_config("paligemma2-3b-224")
    overrides["projector"] = {
        "input_size": spec["vision"].get("hidden_size", base.vision.hidden_size),
        "output_size": spec["decoder"].get("hidden_size", base.decoder.hidden_size),
    }
    config = base.with_overrides(overrides)
    vlmzoo.build(config, seed=0).save_pretrained(directory)


def make_batch(config, batch: int, prompt_tokens: int, suffix_tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows: image tokens, <bos>, prompt, newline (prefix) then a suffix of varying length."""
    generator = torch.Generator().manual_seed(seed)
    vocab = min(config.decoder.vocab_size, config.image_token_id) - 1
    rows = []
    for row in range(batch):
        prefix = torch.cat([
            torch.full((config.num_image_tokens,), config.image_token_id), torch.tensor([2]),
            torch.randint(10, vocab, (prompt_tokens,), generator=generator), torch.tensor([108]),
        ])  # fmt: skip
        suffix = torch.cat(
            [torch.randint(10, vocab, (suffix_tokens - row % 3,), generator=generator), torch.tensor([1])]
        )
        rows.append((prefix, suffix))
    width = max(len(p) + len(s) for p, s in rows)
    input_ids = torch.zeros(batch, width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    for b, (prefix, suffix) in enumerate(rows):
        n = len(prefix) + len(suffix)
        input_ids[b, :n] = torch.cat([prefix, suffix])
        attention_mask[b, :n] = 1
        token_type_ids[b, len(prefix) : n] = 1
    size = config.vision.image_size
    return {
        "input_ids": input_ids,
        "pixel_values": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": input_ids.masked_fill(token_type_ids == 0, -100),
    }


def vlmzoo_step(directory: str, batch: dict[str, torch.Tensor]):
    model = vlmzoo.from_pretrained(directory, dtype=torch.float32).train()
    loss_module = SuffixLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    n_targets = int((batch["labels"][:, 1:] != -100).sum())

    def step() -> float:
        loss = loss_module(**batch) / n_targets
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def transformers_step(directory: str, batch: dict[str, torch.Tensor]):
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--suffix-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per library (after one warm-up step)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint(directory, args.preset, args.vision_layers, args.text_layers)
        config = vlmzoo.from_pretrained(directory, device="meta").config
        batch = make_batch(config, args.batch, args.prompt_tokens, args.suffix_tokens)
        steps = {"vlmzoo": vlmzoo_step(directory, batch), "transformers": transformers_step(directory, batch)}
        first_loss = {name: step() for name, step in steps.items()}  # warm-up; same weights, same batch
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.steps):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)

    tokens = int(batch["attention_mask"].sum())
    result = {
        "preset": args.preset,
        "vision_layers": args.vision_layers,
        "text_layers": args.text_layers,
        "batch": args.batch,
        "tokens_per_step": tokens,
        "suffix_tokens_per_step": int((batch["labels"] != -100).sum()),
        "threads": torch.get_num_threads(),
        "first_step_loss": first_loss,
    }
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {"step_s": round(median, 4), "tokens_per_s": round(tokens / median, 1)}
    result["speedup_vs_transformers"] = round(
        result["vlmzoo"]["tokens_per_s"] / result["transformers"]["tokens_per_s"], 3
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
