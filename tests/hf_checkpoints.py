"""Tiny random PaliGemma checkpoints made with transformers (the test-only reference oracle).

transformers is a test dependency only; vlmzoo never imports it. These helpers make checkpoints the way
the real ones are laid out, so tests can load the *same files* with both libraries and compare::

    from hf_checkpoints import make_hf_model, save_hf_checkpoint, load_hf_model, make_inputs, max_abs_diff

    hf = make_hf_model("gemma2", num_kv_heads=2, sliding_window=6)      # eval mode, every weight perturbed
    path = save_hf_checkpoint(hf, tmp_path / "ckpt", layout="hub", shards=3)
    inputs = make_inputs(hf.config, batch=3)                            # left-padded, with suffixes
    ours = vlmzoo.from_pretrained(path)(**inputs).logits
    theirs = hf(**inputs).logits
    assert max_abs_diff(ours, theirs, inputs["attention_mask"]) < 1e-4

Layouts written by `save_hf_checkpoint` (all are found in the wild):

- ``"hub"``: what the published google/paligemma* repos hold: ``vision_tower.vision_model.*``,
  ``multi_modal_projector.*``, ``language_model.model.*``; no ``lm_head`` (tied).
- ``"transformers"``: what transformers 5 writes: ``vision_tower.embeddings.*`` / ``vision_tower.encoder.*``
  (no ``vision_model.``), otherwise as the hub.
- ``"new"``: the in-memory names of transformers 5: ``model.vision_tower.*``, ``model.multi_modal_projector.*``,
  ``model.language_model.*``, plus an explicit ``lm_head.weight`` (a copy of the embedding when tied).
  ``new_vision_model=True`` keeps ``vision_model.`` under ``model.vision_tower.``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

LAYOUTS = ("hub", "transformers", "new")

#: The keys that the published hub config.json files hold (paligemma-3b-pt-224, paligemma2-3b-pt-224);
#: everything else is left to transformers' defaults.
HUB_TOP_KEYS = {
    "architectures", "bos_token_id", "eos_token_id", "hidden_size", "ignore_index", "image_token_index",
    "model_type", "pad_token_id", "projection_dim", "torch_dtype", "transformers_version", "text_config",
    "vision_config",
}  # fmt: skip
HUB_TOP_KEYS_GEMMA2 = {"_vocab_size", "num_hidden_layers"}
HUB_TEXT_KEYS = {
    "hidden_size", "intermediate_size", "model_type", "num_attention_heads", "num_hidden_layers", "num_image_tokens",
    "num_key_value_heads", "torch_dtype", "vocab_size",
}  # fmt: skip
HUB_TEXT_KEYS_GEMMA2 = {
    "architectures", "attn_logit_softcapping", "cache_implementation", "eos_token_id", "final_logit_softcapping",
    "hidden_act", "hidden_activation", "query_pre_attn_scalar", "sliding_window",
}  # fmt: skip
HUB_VISION_KEYS = {
    "hidden_size", "intermediate_size", "model_type", "num_attention_heads", "num_hidden_layers", "num_image_tokens",
    "patch_size", "projection_dim", "projector_hidden_act", "vision_use_head", "torch_dtype",
}  # fmt: skip
#: Config fields whose value must survive `sparse_config` (dropped keys must equal transformers' defaults).
_CHECKED_TEXT = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "query_pre_attn_scalar", "sliding_window",
    "attn_logit_softcapping", "final_logit_softcapping", "layer_types", "tie_word_embeddings",
)  # fmt: skip
_CHECKED_VISION = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size",
    "layer_norm_eps", "hidden_act",
)  # fmt: skip


def make_hf_config(
    family: str = "gemma",
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    head_dim: int = 16,
    sliding_window: int | None = None,
    vocab_size: int = 320,
    image_token_id: int | None = None,
    image_size: int = 28,
    patch: int = 14,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 4,
    tie_word_embeddings: bool = True,
    vision_act: str = "gelu_pytorch_tanh",
    **text_overrides: Any,
):
    """A tiny `transformers.PaliGemmaConfig`.

    ``family`` is ``"gemma"`` (PaliGemma, Gemma 1 decoder) or ``"gemma2"`` (PaliGemma 2: soft-caps, and
    ``sliding_window`` on even layers; default 4096, far longer than any test sequence). ``num_kv_heads``
    defaults to 1 (MQA) for gemma and ``num_heads // 2`` (GQA) for gemma2. ``image_token_id`` defaults to
    ``vocab_size - 20`` (inside the vocabulary, with unused rows after it as in the real checkpoints).
    ``text_overrides`` go to the text config as is (e.g. ``attn_logit_softcapping=2.0``). ``vision_act`` is
    SigLIP's ``hidden_act`` (``"gelu"`` is the exact GELU in transformers).
    """
    from transformers import PaliGemmaConfig

    if family not in ("gemma", "gemma2"):
        raise ValueError(f"family must be 'gemma' or 'gemma2', got {family!r}")
    text: dict[str, Any] = {
        "model_type": family,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads or (1 if family == "gemma" else max(1, num_heads // 2)),
        "head_dim": head_dim,
        "tie_word_embeddings": tie_word_embeddings,
    }
    if family == "gemma":
        text["hidden_act"] = "gelu_pytorch_tanh"
        text["hidden_activation"] = "gelu_pytorch_tanh"
    else:
        text.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=head_dim,
            sliding_window=sliding_window or 4096,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    text.update(text_overrides)
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "image_size": image_size,
        "patch_size": patch,
        "hidden_act": vision_act,
        "vision_use_head": False,
    }
    return PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size - 20 if image_token_id is None else image_token_id,
        vocab_size=vocab_size,
        projection_dim=hidden_size,
        hidden_size=hidden_size,
        tie_word_embeddings=tie_word_embeddings,
    )


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Add N(0, std) noise to every parameter, in place.

    transformers initialises RMSNorm weights and every bias to zero, and LayerNorm weights to one: a
    loader that dropped or swapped those tensors would still match. Noise makes every tensor count.
    """
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
        param.add_(noise.to(param.dtype))
    return model


def make_hf_model(family: str = "gemma", *, seed: int = 0, std: float = 0.05, **config_kwargs: Any):
    """A tiny random `PaliGemmaForConditionalGeneration` in eval mode, float32, eager attention.

    Every parameter is perturbed (see `perturb_`). ``config_kwargs`` go to `make_hf_config`, e.g.
    ``make_hf_model("gemma2", num_kv_heads=2, sliding_window=6, vocab_size=300, image_token_id=299)``.
    """
    from transformers import PaliGemmaForConditionalGeneration

    config = make_hf_config(family, **config_kwargs)
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    return perturb_(model, seed=seed, std=std).eval()


def load_hf_model(directory: str | Path, dtype: torch.dtype = torch.float32):
    """Load a checkpoint with transformers (eager attention, eval mode), failing on any missing or extra key."""
    from transformers import PaliGemmaForConditionalGeneration

    model, info = PaliGemmaForConditionalGeneration.from_pretrained(
        str(directory), dtype=dtype, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise AssertionError(f"transformers did not load {directory} cleanly: {problems}")
    return model.eval()


def _relayout(key: str, layout: str, new_vision_model: bool) -> str:
    """A key as transformers 5 saves it (``vision_tower.embeddings.*``, ``language_model.model.*``) → ``layout``."""
    if layout == "transformers":
        return key
    if layout == "hub":
        return re.sub(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model.", key)
    if layout == "new":
        key = re.sub(r"^language_model\.lm_head\.", "lm_head.", key)  # an untied head
        key = re.sub(r"^language_model\.model\.", "language_model.", key)
        if new_vision_model:
            key = re.sub(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model.", key)
        return key if key.startswith("lm_head.") else "model." + key
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _sparse(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` cut down to the keys the hub files hold (PaliGemma 2's stale top-level hidden_size too)."""
    text, vision = config["text_config"], config["vision_config"]
    gemma2 = text["model_type"] == "gemma2"
    top_keys = HUB_TOP_KEYS | (HUB_TOP_KEYS_GEMMA2 if gemma2 else set())
    text_keys = HUB_TEXT_KEYS | (HUB_TEXT_KEYS_GEMMA2 if gemma2 else set())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    sparse = {k: v for k, v in config.items() if k in top_keys}
    sparse["text_config"] = {k: v for k, v in text.items() if k in text_keys}
    sparse["vision_config"] = {k: v for k, v in vision.items() if k in HUB_VISION_KEYS}
    sparse["torch_dtype"] = sparse["text_config"]["torch_dtype"] = dtype
    sparse["vision_config"]["projector_hidden_act"] = "gelu_fast"  # present in hub files, unused
    if gemma2:
        sparse["hidden_size"] = 2048  # stale in every PaliGemma 2 hub config
        sparse["num_hidden_layers"] = text["num_hidden_layers"]
        sparse["_vocab_size"] = 257152
        sparse["vision_config"]["torch_dtype"] = dtype
        sparse["text_config"]["hidden_act"] = "gelu_pytorch_tanh"
        sparse["text_config"]["cache_implementation"] = "hybrid"
    return sparse


def _check_sparse_lossless(directory: Path, original) -> None:
    from transformers import PaliGemmaConfig

    loaded = PaliGemmaConfig.from_pretrained(str(directory))
    changed = [
        f"{section}.{field}: {getattr(getattr(original, section), field, None)!r} -> "
        f"{getattr(getattr(loaded, section), field, None)!r}"
        for section, fields in (("text_config", _CHECKED_TEXT), ("vision_config", _CHECKED_VISION))
        for field in fields
        if getattr(getattr(original, section), field, None) != getattr(getattr(loaded, section), field, None)
    ]
    if original.image_token_id != loaded.image_token_id:
        changed.append(f"image_token_id: {original.image_token_id} -> {loaded.image_token_id}")
    if changed:
        raise ValueError(
            "sparse_config dropped keys whose values are not transformers' defaults, so the config no longer "
            "describes the weights. Build the model with the defaults (e.g. image_size=224, head_dim=256): "
            + "; ".join(changed)
        )


def save_hf_checkpoint(
    model,
    directory: str | Path,
    *,
    layout: str = "hub",
    shards: int = 1,
    sparse_config: bool = False,
    bf16: bool = False,
    new_vision_model: bool = False,
) -> Path:
    """Save a transformers PaliGemma model to ``directory`` in one of `LAYOUTS`; returns the directory.

    ``shards > 1`` splits the weights into that many files (``model-0000i-of-0000N.safetensors``) with a
    ``model.safetensors.index.json``, as transformers does for big models. ``sparse_config`` cuts config.json
    down to the keys the real hub files hold (no image_size, head_dim, rope_theta, layer_types...; PaliGemma 2's
    stale top-level ``hidden_size: 2048``) and checks that transformers still reads the same model from it
    (so the dropped values must be transformers' defaults). ``bf16`` stores the weights in bfloat16.
    """
    directory = Path(directory)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    model.save_pretrained(str(directory), max_shard_size="100GB")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
            tensor = handle.get_tensor(key)
            if bf16 and tensor.is_floating_point():
                tensor = tensor.to(torch.bfloat16)
            tensors[_relayout(key, layout, new_vision_model)] = tensor
    if layout == "new" and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()
    (directory / "model.safetensors").unlink()
    keys = list(tensors)
    if shards <= 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        groups = [keys[i::shards] for i in range(shards)]
        weight_map = {}
        for i, group in enumerate(groups, start=1):
            name = f"model-{i:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k] for k in group}, str(directory / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(group, name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = json.loads((directory / "config.json").read_text())
    if bf16:
        config["dtype"] = config["text_config"]["dtype"] = "bfloat16"
    if sparse_config:
        config = _sparse(config)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if sparse_config:
        _check_sparse_lossless(directory, model.config)
    return directory


def _input_facts(config) -> dict[str, int]:
    """Sizes and token ids from a vlmzoo or a transformers PaliGemma config."""
    if hasattr(config, "decoder"):  # vlmzoo.PaliGemmaConfig
        return {
            "image_size": config.vision.image_size,
            "num_image_tokens": config.num_image_tokens,
            "image_token_id": config.image_token_id,
            "vocab_size": config.decoder.vocab_size,
            "pad": config.pad_token_id,
            "bos": config.bos_token_id,
            "eos": config.eos_token_id,
        }
    vision, text = config.vision_config, config.text_config
    return {
        "image_size": vision.image_size,
        "num_image_tokens": (vision.image_size // vision.patch_size) ** 2,
        "image_token_id": config.image_token_id,
        "vocab_size": text.vocab_size,
        "pad": text.pad_token_id if text.pad_token_id is not None else 0,
        "bos": text.bos_token_id if text.bos_token_id is not None else 2,
        "eos": 1,
    }


def make_inputs(
    model_config,
    batch: int = 2,
    *,
    suffix: bool = True,
    prompt_lengths: Sequence[int] | None = None,
    suffix_lengths: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A left-padded PaliGemma batch: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``.

    ``model_config`` is a vlmzoo or a transformers PaliGemma config. Each row is
    ``<pad>* <image>*n <bos> prompt [suffix <eos>]``: prompts are random text (ids 5.. avoiding the image
    token) of ``prompt_lengths[i]`` tokens (default 3, 5, 7, ...), suffixes ``suffix_lengths[i]`` tokens
    (default 2, 4, 3, 5, ...) ending in ``<eos>``, with token_type_ids 1; ``suffix=False`` leaves them out.
    Rows differ in length, so every row but the longest is padded (attention_mask 0, token_type 0).
    Pixels are uniform in [-1, 1], float32.
    """
    facts = _input_facts(model_config)
    generator = torch.Generator().manual_seed(seed)
    prompts = list(prompt_lengths) if prompt_lengths is not None else [3 + 2 * i for i in range(batch)]
    if not suffix:
        suffixes = [0] * batch
    elif suffix_lengths is not None:
        suffixes = list(suffix_lengths)
    else:
        suffixes = [(2, 4, 3, 5)[i % 4] for i in range(batch)]
    if len(prompts) != batch or len(suffixes) != batch:
        raise ValueError(f"give one prompt and suffix length per row (batch={batch})")
    n_image = facts["num_image_tokens"]

    def text(length: int) -> list[int]:
        ids = torch.randint(5, facts["vocab_size"] - 1, (length,), generator=generator)
        ids[ids >= facts["image_token_id"]] += 1  # skip the image token, stay inside the vocabulary
        return ids.tolist()

    rows, types = [], []
    for prompt, suffix_length in zip(prompts, suffixes, strict=True):
        prefix = [facts["image_token_id"]] * n_image + [facts["bos"]] + text(prompt)
        tail = (text(suffix_length - 1) + [facts["eos"]]) if suffix_length else []
        rows.append(prefix + tail)
        types.append([0] * len(prefix) + [1] * len(tail))
    length = max(map(len, rows))
    input_ids = torch.full((batch, length), facts["pad"], dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    token_type_ids = torch.zeros((batch, length), dtype=torch.long)
    for i, (row, row_types) in enumerate(zip(rows, types, strict=True)):
        input_ids[i, length - len(row) :] = torch.tensor(row)
        attention_mask[i, length - len(row) :] = 1
        token_type_ids[i, length - len(row) :] = torch.tensor(row_types)
    size = facts["image_size"]
    pixel_values = torch.rand((batch, 3, size, size), generator=generator) * 2 - 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "pixel_values": pixel_values,
    }


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """Largest |a - b| over the real (non-padding) positions of [B, T, ...] tensors, in float32."""
    diff = (a.float() - b.float()).abs()
    if attention_mask is not None:
        diff = diff[attention_mask.bool()]
    return float(diff.max())
