"""Contrastive training of SigLIP models on (image, text) pairs with the sigmoid loss.

`vlmzoo.train` and ``vlmzoo train`` hand a SigLIP model here (through its `ModelFamily`), with the same
`TrainingConfig`: AdamW with warm-up and cosine decay, gradient clipping, metrics.jsonl, the final model
and processor saved to ``output_dir``. Under ``torchrun`` each process embeds its share of the global
batch and `chunked_sigmoid_loss` passes text embeddings around the ring, so every image meets every text
of the global batch as a negative without one process holding the whole logit matrix; the gradients are
then summed over processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vlmzoo.checkpoints.loading import from_pretrained
from vlmzoo.processing import load_image
from vlmzoo.progress import progress_bar
from vlmzoo.siglip.data import Pair, load_pairs
from vlmzoo.siglip.loss import chunked_sigmoid_loss
from vlmzoo.siglip.processor import SiglipProcessor, load_siglip_processor
from vlmzoo.training.config import TrainingConfig
from vlmzoo.training.distributed import ProcessGroup, join
from vlmzoo.training.trainer import CONFIG_FILE, METRICS_FILE, MetricsLog, seed_everything, warmup_cosine
from vlmzoo.zoo import build

__all__ = ["train_pairs"]

#: TrainingConfig options a contrastive run does not offer, with the value that means "not used".
_UNSUPPORTED = {"train": "all", "resume_from": None, "save_every": None, "grad_accumulation": 1}


def train_pairs(
    config: TrainingConfig,
    *,
    model=None,
    processor: SiglipProcessor | None = None,
    train_records: list[Any] | None = None,
    eval_records: list[Any] | None = None,
):
    """Train a SigLIP model on (image, text) pairs; the trained model (rank 0 and the others alike)."""
    for option, unused in _UNSUPPORTED.items():
        if getattr(config, option) != unused:
            raise ValueError(f"{option}={getattr(config, option)!r} is not offered for SigLIP models yet; leave it out")
    if config.distributed == "fsdp":
        raise ValueError("distributed='fsdp' is not offered for SigLIP models; use 'ddp' (the chunked loss)")
    group = join(config.device)
    try:
        return _run(config, group, model, processor, train_records, eval_records)
    finally:
        group.close()


def _run(config: TrainingConfig, group: ProcessGroup, model, processor, train_records, eval_records):
    device = group.device
    seed_everything(config.seed)
    if processor is None:
        source = config.processor or (None if model is not None else config.model)
        if source is None:
            raise ValueError("pass the processor (or a processor path) along with an in-memory model")
        processor = load_siglip_processor(source)
    pairs = load_pairs(train_records if train_records is not None else _data(config.train_data, "train_data"))
    evals = None
    if eval_records is not None or config.eval_data is not None:
        evals = load_pairs(eval_records if eval_records is not None else config.eval_data)
    if config.batch_size % group.world_size:
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by the number of processes ({group.world_size})"
        )
    local_batch = config.batch_size // group.world_size
    output_dir = Path(config.output_dir)
    if (output_dir / METRICS_FILE).exists() and not config.overwrite:
        raise ValueError(
            f"output_dir {output_dir} already holds a training run ({METRICS_FILE}); choose a new output_dir or set "
            "overwrite=true to start over"
        )
    if group.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        if config.init == "random":
            init = {} if config.init_std is None else {"init_std": config.init_std}
            model = build(
                config.model, device=device, dtype=torch.float32, seed=config.seed, **init, **config.model_overrides
            )
        else:
            model = from_pretrained(config.model, dtype=torch.float32, device=device)
    model = model.to(device)
    processor.check_model(model.config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step, warmup_steps=config.warmup_steps, max_steps=config.max_steps, min_ratio=config.min_lr_ratio
        ),
    )
    metrics = MetricsLog(output_dir / METRICS_FILE if group.is_main else None)
    if group.is_main:
        (output_dir / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
        metrics.write(event="start", step=0, trainable_parameters=sum(p.numel() for p in params),
                      pairs=len(pairs), world_size=group.world_size, device=str(device))  # fmt: skip
    order = _Order(len(pairs), config.batch_size, config.seed)
    bar = progress_bar(
        total=config.max_steps, desc="train", unit="step", enabled=config.progress if group.is_main else False
    )
    window_start = time.perf_counter()
    for step in range(config.max_steps):
        indices = order.batch(step)[group.rank * local_batch : (group.rank + 1) * local_batch]
        loss = _loss(model, processor, [pairs[i] for i in indices], device)
        loss.backward()
        if group.active:
            for param in params:
                if param.grad is not None:
                    dist.all_reduce(param.grad)
        grad_norm = None
        if config.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        (total,) = group.sum([float(loss.detach())])
        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            elapsed = time.perf_counter() - window_start
            metrics.write(step=done, loss=total, lr=lr, grad_norm=grad_norm, t=float(model.logit_scale.detach().exp()),
                          b=float(model.logit_bias.detach()), seconds=round(elapsed, 3))  # fmt: skip
            bar.set_postfix(loss=f"{total:.4f}", refresh=False)
            window_start = time.perf_counter()
        bar.update(1)
        if evals is not None and ((config.eval_every and done % config.eval_every == 0) or done == config.max_steps):
            metrics.write(step=done, **evaluate_pairs(model, processor, evals, local_batch, group))
    bar.close()
    model.eval()
    if group.is_main:
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        metrics.write(event="end", step=config.max_steps)
    metrics.close()
    group.barrier()
    return model


def _data(value, field: str):
    if value is None:
        raise ValueError(f"no training data: give {field} (a JSONL file of image/text pairs or a generator spec)")
    return value


def _loss(model, processor: SiglipProcessor, pairs: list[Pair], device: torch.device) -> torch.Tensor:
    """This process's share of the sigmoid loss of the global batch."""
    batch = processor(images=[_image(pair) for pair in pairs], text=[pair.text for pair in pairs])
    images = model.image_embeddings(batch["pixel_values"].to(device))
    mask = batch.get("attention_mask")
    texts = model.text_embeddings(batch["input_ids"].to(device), None if mask is None else mask.to(device))
    return chunked_sigmoid_loss(images, texts, model.logit_scale, model.logit_bias)


def _image(pair: Pair):
    return load_image(pair.image) if isinstance(pair.image, (str, Path)) else pair.image


@torch.no_grad()
def evaluate_pairs(model, processor: SiglipProcessor, pairs: list[Pair], batch_size: int, group: ProcessGroup) -> dict:
    """Mean sigmoid loss over the eval pairs in batches, and how often an image's best text is its own."""
    was_training = model.training
    model.eval()
    losses, hits, count = 0.0, 0, 0
    mine = pairs[group.rank :: group.world_size]
    for start in range(0, len(mine) - batch_size + 1, batch_size):
        chunk = mine[start : start + batch_size]
        batch = processor(images=[_image(p) for p in chunk], text=[p.text for p in chunk])
        images = model.image_embeddings(batch["pixel_values"].to(model.device))
        mask = batch.get("attention_mask")
        texts = model.text_embeddings(batch["input_ids"].to(model.device), mask)
        logits = model.logits(images, texts)
        from vlmzoo.siglip.loss import sigmoid_loss

        losses += float(sigmoid_loss(images, texts, model.logit_scale, model.logit_bias))
        same = torch.tensor([[a.text == b.text for b in chunk] for a in chunk], device=logits.device)
        hits += int(same[torch.arange(len(chunk)), logits.argmax(dim=1)].sum())
        count += len(chunk)
    batches = max(1, count // batch_size)
    loss_sum, hit_sum, total = group.sum([losses, float(hits), float(count)])
    model.train(was_training)
    return {
        "eval_loss": loss_sum / max(1, batches * group.world_size),
        "eval_image_to_text_top1": hit_sum / max(1, total),
    }


class _Order:
    """A fresh seeded permutation of the data each epoch; step s takes the next ``batch_size`` indices."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if batch_size > size:
            raise ValueError(f"batch_size={batch_size} is larger than the {size} training pairs")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._epoch, self._perm = -1, None

    def batch(self, step: int) -> list[int]:
        per_epoch = self.size // self.batch_size
        epoch, offset = divmod(step, per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.size, generator=generator).tolist(), epoch
        return self._perm[offset * self.batch_size : (offset + 1) * self.batch_size]
