"""The training loop: AdamW with warm-up and cosine decay, accumulation, clipping, autocast, evaluation.

`train` is the Python entry point and `run` the one the command line uses; both end in `Trainer`,
which runs the same code on one process or under ``torchrun`` (see `vlmzoo.training.distributed`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from vlmzoo.checkpoints.loading import from_pretrained
from vlmzoo.errors import VlmzooError
from vlmzoo.processing import PaliGemmaProcessor, load_processor
from vlmzoo.progress import progress_bar
from vlmzoo.training.checkpointing import (
    CheckpointError,
    find_checkpoint,
    load_adapters,
    load_optimizer_state,
    read_state,
    restore_rng,
    save_checkpoint,
)
from vlmzoo.training.config import TrainingConfig
from vlmzoo.training.data import Collator, PaddedDataset, Record, RecordDataset, load_records, validate
from vlmzoo.training.distributed import ProcessGroup, join
from vlmzoo.training.evaluation import autocast, detection_scores, evaluate_loss, segmentation_scores
from vlmzoo.training.lora import apply_lora, merge_lora
from vlmzoo.training.loss import SuffixLoss, count_targets
from vlmzoo.training.parts import freeze_all_but
from vlmzoo.training.quantization_aware import QuantizedWeights
from vlmzoo.training.sampling import StepBatches
from vlmzoo.zoo import build, get_config

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "training_config.json"
_INPUTS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")


def train(
    model: nn.Module | str,
    processor: PaliGemmaProcessor | str | None = None,
    train_data: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
    eval_data: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
    **options: Any,
) -> nn.Module | None:
    """Fine-tune ``model`` on ``train_data`` and return it (trained, in eval mode; under FSDP only rank 0
    gathers the whole model, and the other processes get None).

    ``model`` is a loaded model, a checkpoint directory or hub id, or (with ``init="random"``) a zoo
    variant name; ``processor`` a processor, a directory or hub id (default: the model's). Data is a
    JSONL path, a list of records (dicts with image, prefix, suffix) or a generator spec such as
    ``{"generator": "shapes", "seed": 0, "images": 1000}`` (see `vlmzoo.data`). ``options`` are the fields of
    `TrainingConfig`: ``output_dir``, ``max_steps``, ``batch_size`` and ``learning_rate`` first.
    The final model and processor are saved to ``output_dir`` with ``save_pretrained``.

    Args:
        model: a loaded model, a checkpoint directory or hub id, or a zoo variant name.
        processor: a processor, or its directory or hub id (default: the model's).
        train_data: a JSONL path, a list of records or a generator spec.
        eval_data: the same, evaluated every ``eval_every`` steps and at the end.
        **options: the other `TrainingConfig` fields (``output_dir``, ``max_steps``, ``batch_size``,
            ``learning_rate``, ``device="auto"``...).

    Returns:
        The trained model in eval mode (None on ranks other than 0 under FSDP).
    """
    values = dict(options)
    model_object = None
    if isinstance(model, nn.Module):
        model_object = model
        values["model"] = getattr(model, "name_or_path", None) or model.config.name or "model"
    else:
        values["model"] = os.fspath(model)
    processor_object = None
    if processor is not None and not isinstance(processor, (str, os.PathLike)):
        processor_object = processor  # a PaliGemmaProcessor, or the processor of another model family
    elif processor is not None:
        values["processor"] = os.fspath(processor)
    family = _family(model_object, values)
    if family is not None:  # another model family trains its own way (e.g. SigLIP on image-text pairs)
        config = TrainingConfig.checked(
            {**values, **{k: v for k, v in (("train_data", train_data), ("eval_data", eval_data))
                          if isinstance(v, (str, os.PathLike, Mapping))}},
            source="vlmzoo.train()",
        )  # fmt: skip
        in_memory = {k: v for k, v in (("train_records", train_data), ("eval_records", eval_data))
                     if v is not None and not isinstance(v, (str, os.PathLike, Mapping))}  # fmt: skip
        return _family_train(family, config, model=model_object, processor=processor_object, **in_memory)
    train_records = eval_records = None
    if isinstance(train_data, (str, os.PathLike, Mapping)):  # a path or a generator spec: kept in the config
        values["train_data"] = train_data if isinstance(train_data, Mapping) else os.fspath(train_data)
    elif train_data is not None:
        train_records = load_records(train_data)
    if isinstance(eval_data, (str, os.PathLike, Mapping)):
        values["eval_data"] = eval_data if isinstance(eval_data, Mapping) else os.fspath(eval_data)
    elif eval_data is not None:
        eval_records = load_records(eval_data)
    config = TrainingConfig.checked(values, source="vlmzoo.train()")
    trainer = Trainer(
        config, model=model_object, processor=processor_object, train_records=train_records, eval_records=eval_records
    )
    return trainer.run()


def _family(model: nn.Module | None, values: dict[str, Any]):
    """The registered non-PaliGemma `ModelFamily` of the model a run trains, or None (PaliGemma, or unknown:
    the ordinary path then reports the problem)."""
    from vlmzoo.checkpoints.hub import resolve
    from vlmzoo.config import PaliGemmaConfig
    from vlmzoo.families import family_of_config, family_of_json
    from vlmzoo.plugins import get_registries

    registries = get_registries()
    if model is not None:
        return family_of_config(getattr(model, "config", None), registries)
    name = values.get("model")
    if not isinstance(name, str):
        return None
    try:
        if values.get("init") == "random":
            config = get_config(name, registries=registries)
            return None if isinstance(config, PaliGemmaConfig) else family_of_config(config, registries)
        path = resolve(name, weights=False) / "config.json"
        return family_of_json(json.loads(path.read_bytes()), registries) if path.is_file() else None
    except (VlmzooError, OSError, ValueError, LookupError):
        return None


def _family_train(family, config: TrainingConfig, **objects: Any) -> nn.Module | None:
    if family.train is None:
        raise ValueError(f"{family.name} models cannot be trained by vlmzoo.train (the family offers no training)")
    return family.train(config, **objects)


def run(config: TrainingConfig) -> nn.Module | None:
    """Run a training described entirely by ``config`` (what ``vlmzoo train`` does); returns as `train`."""
    family = _family(None, config.model_dump())
    if family is not None:
        return _family_train(family, config)
    return Trainer(config).run()


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision choice on a device (None: plain float32)."""
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


#: Options a resumed run must share with the run that wrote the checkpoint.
_RESUME_MUST_MATCH = ("batch_size", "seed", "train", "lora", "init", "model_overrides", "quantization_aware")


class Trainer:
    """One fine-tuning run. Build it from a `TrainingConfig` (plus in-memory objects) and call `run`."""

    def __init__(
        self,
        config: TrainingConfig,
        *,
        model: nn.Module | None = None,
        processor: PaliGemmaProcessor | None = None,
        train_records: list[Record] | None = None,
        eval_records: list[Record] | None = None,
    ) -> None:
        self.config = config
        self._model = model
        self._processor = processor
        self._train_records = train_records
        self._eval_records = eval_records

    # ------------------------------------------------------------------ setup

    def _load_processor(self) -> PaliGemmaProcessor:
        if self._processor is not None:
            return self._processor
        source = self.config.processor
        if source is None:
            if self._model is not None:
                raise ValueError("pass the processor (or a processor path) along with an in-memory model")
            source = self.config.model
        return load_processor(source)

    def _load_model(self, device: torch.device, checkpoint: Path | None) -> nn.Module:
        """The model to train: in memory, from a checkpoint, or a randomly initialised zoo variant."""
        config = self.config
        weights_from = checkpoint if checkpoint is not None and config.train != "lora" else None
        if self._model is not None:
            model = self._model.to(device)
            if weights_from is not None:
                model.load_state_dict(from_pretrained(weights_from, dtype=model.dtype).state_dict())
            return model
        if weights_from is not None:
            return from_pretrained(weights_from, dtype=torch.float32, device=device)
        if config.init == "random":
            init = {} if config.init_std is None else {"init_std": config.init_std}
            return build(
                config.model, device=device, dtype=torch.float32, seed=config.seed, **init, **config.model_overrides
            )
        return from_pretrained(config.model, dtype=torch.float32, device=device)

    def _records(self, given: list[Record] | None, path: str | None) -> list[Record] | None:
        if given is not None:
            return given
        return None if path is None else load_records(path)

    @staticmethod
    def _check_pair(model: nn.Module, processor: PaliGemmaProcessor) -> None:
        cfg = model.config
        if processor.num_image_tokens != cfg.num_image_tokens:
            raise ValueError(
                f"the processor lays out {processor.num_image_tokens} image tokens per image but the model takes "
                f"{cfg.num_image_tokens}; use the processor that matches the model's resolution"
            )
        if processor.image_token_id != cfg.image_token_id:
            raise ValueError(
                f"the processor's <image> token is id {processor.image_token_id} but the model expects "
                f"{cfg.image_token_id}; use the processor of this model"
            )
        if processor.vocab_size > cfg.decoder.vocab_size:
            raise ValueError(
                f"the processor's tokenizer has {processor.vocab_size} tokens but the model's embedding has "
                f"{cfg.decoder.vocab_size} rows; use a model with a large enough vocabulary"
            )

    def _checkpoint(self, output_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to resume from and its state, checked against this run's options."""
        config = self.config
        if config.resume_from is None:
            if (output_dir / METRICS_FILE).exists() and not config.overwrite:
                raise ValueError(
                    f"output_dir {output_dir} already holds a training run ({METRICS_FILE}); choose a new "
                    "output_dir, resume it with resume_from='latest', or set overwrite=true to start over"
                )
            return None, None
        checkpoint = find_checkpoint(config.resume_from, output_dir)
        if checkpoint is None:
            return None, None
        state = read_state(checkpoint)
        saved = state.get("run", {})
        current = json.loads(config.model_dump_json(include=set(_RESUME_MUST_MATCH)))
        different = [name for name in _RESUME_MUST_MATCH if name in saved and saved[name] != current[name]]
        if different:
            details = ", ".join(f"{n}: {saved[n]!r} in the checkpoint, {current[n]!r} now" for n in different)
            raise CheckpointError(
                f"cannot resume {checkpoint}: the run's options changed ({details}); resume with the same options "
                "or start a new output_dir"
            )
        if state["step"] >= config.max_steps:
            raise CheckpointError(
                f"{checkpoint} is at step {state['step']}, not before max_steps={config.max_steps}; raise max_steps "
                "to train further"
            )
        return checkpoint, state

    def _select_trainable(self, model: nn.Module) -> list[str]:
        config = self.config
        if config.train == "lora":
            lora = config.lora
            apply_lora(model, lora.targets, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout)
            return [name for name, p in model.named_parameters() if p.requires_grad]
        return freeze_all_but(model, config.train)

    # ------------------------------------------------------------------ the loop

    def run(self) -> nn.Module | None:
        """Train; the trained model (None on the processes other than rank 0 of an FSDP run)."""
        config = self.config
        group = join(config.device)
        try:
            return self._run(group)
        finally:
            # The sharded model's reference cycles (modules, hooks, device mesh) hold the process group:
            # free them now, while the group and the interpreter are alive, not during interpreter exit.
            gc.collect()
            group.close()

    def _run(self, group: ProcessGroup) -> nn.Module | None:
        config = self.config
        device = group.device
        seed_everything(config.seed)
        processor = self._load_processor()
        train_records = self._records(self._train_records, config.train_data)
        if train_records is None:
            raise ValueError("no training data: give train_data (a JSONL file or a list of records)")
        eval_records = self._records(self._eval_records, config.eval_data)
        validate(train_records, processor, max_length=config.max_length)
        if eval_records is not None:
            validate(eval_records, processor, max_length=config.max_length)
        output_dir = Path(config.output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise ValueError(f"output_dir {output_dir} is a file; give a directory")
        checkpoint, state = self._checkpoint(output_dir)
        if group.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)

        model = self._load_model(device, checkpoint)
        self._check_pair(model, processor)
        if processor.max_length > model.config.decoder.max_position_embeddings:
            validate(train_records, processor, max_length=model.config.decoder.max_position_embeddings)
        trainable = self._select_trainable(model)
        if checkpoint is not None and config.train == "lora":
            load_adapters(model, checkpoint)
        model.train()
        quantized = QuantizedWeights(model, config.quantization_aware)  # no scheme: a no-op
        loss_module = SuffixLoss(model)
        wrapped = self._wrap(loss_module, group)
        params = [p for p in loss_module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=config.adam_betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(
                step, warmup_steps=config.warmup_steps, max_steps=config.max_steps, min_ratio=config.min_lr_ratio
            ),
        )
        start_step = 0 if state is None else int(state["step"])
        sampler = StepBatches(
            len(train_records),
            config.batch_size,
            grad_accumulation=config.grad_accumulation,
            rank=group.rank,
            world_size=group.world_size,
            seed=config.seed,
            start_step=start_step,
            max_steps=config.max_steps,
        )
        loader = self._loader(train_records, processor, sampler, device)
        self._eval_batch = sampler.micro_batch_size
        eval_loader = None
        if eval_records is not None:
            eval_loader = self._eval_loader(eval_records, processor, sampler.micro_batch_size, group, device)
        amp = autocast_dtype(config.precision, device)
        batches = iter(loader)  # before restoring the generators: starting workers draws from them
        if checkpoint is not None:
            set_optimizer_state_dict(
                loss_module, optimizer, load_optimizer_state(checkpoint), options=StateDictOptions(full_state_dict=True)
            )
            scheduler.load_state_dict(state["scheduler"])
            restore_rng(checkpoint, state)

        metrics = MetricsLog(output_dir / METRICS_FILE if group.is_main else None, resume_after=start_step or None)
        if group.is_main:
            (output_dir / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
            metrics.write(
                event="resume" if checkpoint is not None else "start",
                step=start_step,
                checkpoint=None if checkpoint is None else str(checkpoint),
                trainable_parameters=sum(p.numel() for p in params),
                trainable_tensors=len(trainable),
                world_size=group.world_size,
                device=str(device),
                autocast=None if amp is None else str(amp).removeprefix("torch."),
            )
        bar = progress_bar(
            total=config.max_steps,
            initial=start_step,
            desc="train",
            unit="step",
            enabled=config.progress if group.is_main else False,
        )
        window_tokens, window_start = 0.0, time.perf_counter()
        for step in range(start_step, config.max_steps):
            micro = [next(batches) for _ in range(config.grad_accumulation)]
            local = [
                float(sum(count_targets(b) for b in micro)),
                float(sum(int(b["attention_mask"].sum()) for b in micro)),
            ]
            n_targets, n_tokens = group.sum(local)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            with quantized.applied():
                for k, batch in enumerate(micro):
                    with self._sync_gradients(wrapped, k == len(micro) - 1), autocast(device, amp):
                        inputs = {name: batch[name].to(device, non_blocking=True) for name in _INPUTS}
                        summed = wrapped(**inputs)
                    # DDP and FSDP average gradients over processes; scaling by world/n gives d(global mean).
                    (summed * (group.world_size / n_targets)).backward()
                    loss_sum += summed.detach().double()
            grad_norm = None
            if config.max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            (total_loss,) = group.sum([float(loss_sum)])
            loss = total_loss / n_targets
            window_tokens += n_tokens
            done = step + 1
            if done % config.log_every == 0 or done == config.max_steps:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / elapsed if elapsed > 0 else float("nan")
                metrics.write(step=done, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tokens_per_s)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                window_tokens, window_start = 0.0, time.perf_counter()
            bar.update(1)
            if eval_loader is not None and (
                (config.eval_every and done % config.eval_every == 0) or done == config.max_steps
            ):
                with quantized.applied():
                    results = self._evaluate(wrapped, eval_loader, eval_records, processor, group, amp)
                metrics.write(step=done, **results)
                bar.set_postfix(loss=f"{loss:.4f}", eval_loss=f"{results['eval_loss']:.4f}", refresh=False)
            if config.save_every and done % config.save_every == 0 and done < config.max_steps:
                self._save_checkpoint(output_dir, done, loss_module, optimizer, scheduler, group)
        bar.close()
        model.eval()
        quantized.snap()
        final = self._final_model(loss_module, group)
        if group.is_main:
            final.save_pretrained(output_dir)
            processor.save_pretrained(output_dir)
            metrics.write(event="end", step=config.max_steps)
        metrics.close()
        group.barrier()
        if final is model:
            final.requires_grad_(True)
        return final

    # ------------------------------------------------------------------ helpers

    def _wrap(self, loss_module: SuffixLoss, group: ProcessGroup) -> nn.Module:
        """DistributedDataParallel or FSDP2 under torchrun; the loss module itself on one process."""
        if not group.active or self.config.distributed == "none":
            return loss_module
        if self.config.distributed == "fsdp":
            from vlmzoo.training.sharding import shard_model

            return shard_model(loss_module, group)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [group.device.index] if group.device.type == "cuda" else None
        return DistributedDataParallel(loss_module, device_ids=device_ids)

    def _sharded(self, group: ProcessGroup) -> bool:
        return group.active and self.config.distributed == "fsdp"

    @staticmethod
    def _sync_gradients(wrapped: nn.Module, sync: bool):
        if sync:
            return contextlib.nullcontext()
        if hasattr(wrapped, "no_sync"):
            return wrapped.no_sync()
        if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-batch
            return _fsdp_no_sync(wrapped)
        return contextlib.nullcontext()

    def _full_state(self, loss_module: SuffixLoss, group: ProcessGroup) -> dict[str, torch.Tensor]:
        """The model's whole state dict on the CPU (gathered from every process under FSDP)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(loss_module, options=options)
        return {name.removeprefix("model."): tensor for name, tensor in state.items()}

    def _save_checkpoint(
        self,
        output_dir: Path,
        step: int,
        loss_module: SuffixLoss,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        group: ProcessGroup,
    ) -> None:
        config = self.config
        optimizer_state = get_optimizer_state_dict(
            loss_module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        sharded = self._sharded(group)
        full = self._full_state(loss_module, group) if sharded else None
        if group.is_main:
            if config.train == "lora":
                source = full if full is not None else dict(loss_module.model.named_parameters())
                adapters = {
                    n: t.detach().to("cpu").contiguous()
                    for n, t in source.items()
                    if n.endswith((".lora_a", ".lora_b"))
                }
                save_model = None
            else:
                adapters = None
                model = loss_module.model if full is None else self._rebuilt(loss_module.model.config, full)
                save_model = model.save_pretrained
            run = json.loads(config.model_dump_json(include=set(_RESUME_MUST_MATCH)))
            save_checkpoint(
                output_dir,
                step,
                save_model=save_model,
                adapters=adapters,
                optimizer_state=optimizer_state,
                scheduler=scheduler,
                run=run,
                keep=config.keep_checkpoints,
            )
        group.barrier()

    def _rebuilt(self, model_config, state: dict[str, torch.Tensor], lora: bool = False) -> nn.Module:
        """A CPU model holding ``state`` (a gathered FSDP state dict), with LoRA merged when it has adapters."""
        model = build(model_config, device="meta", dtype=torch.float32)
        if lora:
            settings = self.config.lora
            apply_lora(model, settings.targets, rank=settings.rank, alpha=settings.alpha)
        model.load_state_dict(state, assign=True)
        return merge_lora(model) if lora else model

    def _final_model(self, loss_module: SuffixLoss, group: ProcessGroup) -> nn.Module | None:
        """The trained model in its original architecture (LoRA merged; gathered onto rank 0 under FSDP,
        None on the other ranks: their shards need the process group, which ends with the run)."""
        lora = self.config.train == "lora"
        if self._sharded(group):
            full = self._full_state(loss_module, group)  # gathered onto rank 0 only
            if not group.is_main:
                return None
            return self._rebuilt(loss_module.model.config, full, lora=lora).eval()
        return merge_lora(loss_module.model) if lora else loss_module.model

    def _evaluate(
        self,
        wrapped: nn.Module,
        loader: torch.utils.data.DataLoader,
        records: list[Record],
        processor: PaliGemmaProcessor,
        group: ProcessGroup,
        amp: torch.dtype | None,
    ) -> dict[str, float]:
        inner = _unwrapped(wrapped)
        inner.model.eval()
        try:
            results = {"eval_loss": evaluate_loss(inner, loader, group, group.device, amp)}
            if self.config.eval_detection and not self._sharded(group):
                # Generation runs in the weights' own dtype: its KV cache does not follow autocast.
                scores = detection_scores(inner.model, processor, records, batch_size=self._eval_batch, group=group)
                results.update(scores or {})
                scores = segmentation_scores(inner.model, processor, records, batch_size=self._eval_batch, group=group)
                results.update(scores or {})
        finally:
            inner.model.train()
        return results

    def _loader(
        self, records: list[Record], processor: PaliGemmaProcessor, sampler: StepBatches, device: torch.device
    ) -> torch.utils.data.DataLoader:
        workers = self.config.num_workers
        if workers:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        sampler.tag_epochs = self.config.shuffle_objects and any(record.objects for record in records)
        return torch.utils.data.DataLoader(
            RecordDataset(records),
            batch_sampler=sampler,
            collate_fn=Collator(processor, self.config.padding_side, shuffle_seed=self.config.seed),
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )

    def _eval_loader(
        self,
        records: list[Record],
        processor: PaliGemmaProcessor,
        batch_size: int,
        group: ProcessGroup,
        device: torch.device,
    ) -> torch.utils.data.DataLoader:
        mine = list(range(group.rank, len(records), group.world_size))
        if self._sharded(group):
            # Every process must run the same number of forward passes under FSDP: pad with a repeat
            # of the shard's first example, which `evaluate_loss` sees with zero weight.
            per_rank = -(-len(records) // group.world_size)
            mine = mine + [-1 - mine[0]] * (per_rank - len(mine)) if mine else []
        batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
        return torch.utils.data.DataLoader(
            PaddedDataset(records),
            batch_sampler=batches,
            collate_fn=Collator(processor, self.config.padding_side),
            num_workers=self.config.num_workers,
            pin_memory=device.type == "cuda",
        )


@contextlib.contextmanager
def _fsdp_no_sync(module: nn.Module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _unwrapped(wrapped: nn.Module) -> nn.Module:
    """The `SuffixLoss` inside a DistributedDataParallel wrapper (FSDP modules are used as they are)."""
    return wrapped.module if hasattr(wrapped, "no_sync") else wrapped


class MetricsLog:
    """One JSON object per line (step, loss, lr, tokens/s, eval metrics) for plotting; rank 0 only.

    A resumed run first drops the lines of steps after its checkpoint (logged before the interruption
    but trained again now), so the log reads as one uninterrupted run.
    """

    def __init__(self, path: Path | None, resume_after: int | None = None) -> None:
        self.path = path
        self._file = None
        if path is None:
            return
        if resume_after is not None and path.exists():
            kept = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_after
            ]
            partial = path.with_name(path.name + ".partial")
            partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(partial, path)
        self._file = open(path, "a" if resume_after is not None else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, **fields: Any) -> None:
        if self._file is None:
            return
        fields = {"time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(fields) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
