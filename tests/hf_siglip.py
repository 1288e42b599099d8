"""Tiny random SigLIP checkpoints and processors made with transformers (the test-only reference oracle).

hf = make_hf_siglip()                                  # eval mode, every weight perturbed
path = save_hf_siglip(hf, tmp_path / "ckpt")           # the hub's SiglipModel layout, sparse config.json
proc_dir = make_hf_siglip_processor_dir(tmp_path / "ckpt", image_size=28, max_length=16)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hf_checkpoints import perturb_
from tiny_tokenizer import make_tiny_tokenizer

TEXT_DEFAULTS = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "max_position_embeddings": 64, "layer_norm_eps": 1e-6,
                 "hidden_act": "gelu_pytorch_tanh"}  # fmt: skip
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "num_channels": 3, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6,
                   "hidden_act": "gelu_pytorch_tanh"}  # fmt: skip


def make_hf_siglip(
    *,
    seed: int = 0,
    vocab_size: int = 320,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    image_size: int = 28,
    patch: int = 14,
    max_length: int = 16,
    act: str = "gelu_pytorch_tanh",
    text_hidden: int | None = None,
):
    """A tiny random `transformers.SiglipModel` (float32, eager attention, eval mode, weights perturbed).

    ``text_hidden`` gives the text tower another width than the image tower (its head projects back).
    """
    from transformers import SiglipConfig, SiglipModel

    text_hidden = text_hidden or hidden
    text = {"vocab_size": vocab_size, "hidden_size": text_hidden, "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "max_position_embeddings": max_length,
            "hidden_act": act, "projection_size": hidden}  # fmt: skip
    vision = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch,
        "hidden_act": act,
    }
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel._from_config(config, attn_implementation="eager", dtype=torch.float32)
    return perturb_(model, seed=seed).eval()


def save_hf_siglip(model, directory: str | Path, *, sparse: bool = True) -> Path:
    """Save with transformers; ``sparse`` drops config keys equal to transformers' defaults, as hub files do."""
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True)
    if sparse:
        path = directory / "config.json"
        data = json.loads(path.read_text())
        data["text_config"] = _sparse(data["text_config"], TEXT_DEFAULTS, "siglip_text_model")
        data["vision_config"] = _sparse(data["vision_config"], VISION_DEFAULTS, "siglip_vision_model")
        path.write_text(json.dumps(data, indent=2))
    return directory


def _sparse(section: dict[str, Any], defaults: dict[str, Any], model_type: str) -> dict[str, Any]:
    kept = {k: v for k, v in section.items() if k in defaults and v != defaults[k]}
    if section.get("projection_size") not in (None, section.get("hidden_size")):
        kept["projection_size"] = section["projection_size"]
    return {"model_type": model_type, **kept}


def make_hf_siglip_processor(image_size: int = 28, tokenizer_dir: str | Path | None = None):
    """transformers' SiglipProcessor around the tiny Gemma-like tokenizer (PIL image processor)."""
    from transformers import AutoTokenizer, SiglipProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    make_tiny_tokenizer(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def make_hf_siglip_processor_dir(directory: str | Path, image_size: int = 28) -> Any:
    """Write transformers' SiglipProcessor files into ``directory``; returns the transformers processor."""
    directory = Path(directory)
    processor = make_hf_siglip_processor(image_size, directory / "_tokenizer_src")
    processor.save_pretrained(str(directory))
    for child in (directory / "_tokenizer_src").iterdir():
        child.unlink()
    (directory / "_tokenizer_src").rmdir()
    return processor
