"""SigLIP processor: texts → fixed-length token ids, images → normalised pixels, as transformers' SiglipProcessor.

The text tower pools its *last* position, and the checkpoints were trained on text padded to the tower's
length, so every text is truncated and padded (on the right) to exactly ``max_length`` tokens, as
transformers does with ``padding="max_length"``. The tokenizer is the checkpoint's ``tokenizer.json`` read by
the ``tokenizers`` library (the Gemma tokenizer of SigLIP 2, or any other), with the special tokens its own
post-processor adds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from tokenizers import Tokenizer

from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.checkpoints.hub import resolve
from vlmzoo.errors import InvalidFileError
from vlmzoo.processing.batch import BatchEncoding
from vlmzoo.processing.files import (
    PREPROCESSOR_CONFIG_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    read_json,
    text_config_length,
)
from vlmzoo.processing.image_settings import read_image_settings
from vlmzoo.processing.images import preprocess_images
from vlmzoo.processing.tokenizer import load_tokenizer, token_content
from vlmzoo.values import is_integer

__all__ = ["DEFAULT_TEMPLATE", "SiglipProcessor", "load_siglip_processor"]

DEFAULT_MAX_LENGTH = 64
#: The prompt template transformers' zero-shot pipeline puts SigLIP labels in.
DEFAULT_TEMPLATE = "This is a photo of {}."


class SiglipProcessor:
    """Turns texts and images into `SiglipModel` inputs.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``; its post-processor decides the special tokens (e.g. ``<bos>``).
        image_size: the square resolution of the image tower.
        max_length: tokens per text (the text tower's positions); texts are truncated and padded to it.
        pad_token: the token that fills texts up to ``max_length``.
        padding_side: where the padding goes (``"right"``, as SigLIP was trained; a tokenizer_config.json may
            say otherwise, and transformers follows it).
        return_attention_mask: whether batches carry an ``attention_mask`` (transformers passes one to the
            model when the tokenizer's ``model_input_names`` lists it; SigLIP's own tokenizer does not).
        prompt_template: how zero-shot classification turns a label into text (``{}`` is the label); a
            model trained on other captions keeps its own here (saved in tokenizer_config.json).
        image_mean: per-channel mean subtracted after rescaling (0.5 maps pixels to [-1, 1]).
        image_std: per-channel divisor after the mean.
        rescale_factor: multiplies raw 0..255 pixels first (1/255).
        resample: PIL resampling filter of the square resize (bicubic, as SigLIP expects).
        do_convert_rgb: convert grayscale / palette / transparent images to RGB first.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        image_size: int,
        max_length: int = DEFAULT_MAX_LENGTH,
        pad_token: str = "<pad>",
        padding_side: str = "right",
        return_attention_mask: bool = False,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        rescale_factor: float = 1 / 255,
        resample: int = PIL.Image.Resampling.BICUBIC,
        do_convert_rgb: bool = True,
        prompt_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if not is_integer(image_size, 1) or not is_integer(max_length, 1):
            raise ValueError(f"image_size and max_length must be positive integers, got {image_size}, {max_length}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the tokenizer has no pad token {pad_token!r}; name the one it has with pad_token=")
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.max_length = max_length
        self.pad_token, self.pad_token_id = pad_token, pad_id
        self.padding_side = padding_side
        self.return_attention_mask = bool(return_attention_mask)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        self.rescale_factor = float(rescale_factor)
        self.resample = PIL.Image.Resampling(int(resample))
        self.do_convert_rgb = bool(do_convert_rgb)
        if not isinstance(prompt_template, str) or prompt_template.count("{}") != 1:
            raise ValueError(f"prompt_template must hold one '{{}}' where the label goes, got {prompt_template!r}")
        self.prompt_template = prompt_template
        # A copy that truncates and pads, so the caller's tokenizer is left as it was.
        self._fixed = Tokenizer.from_str(tokenizer.to_str())
        self._fixed.enable_truncation(max_length)
        self._fixed.enable_padding(direction=padding_side, pad_id=pad_id, pad_token=pad_token, length=max_length)

    @property
    def vocab_size(self) -> int:
        """Token ids the tokenizer can produce (the text tower needs at least as many embedding rows)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def check_model(self, config) -> None:
        """Raise ValueError naming the mismatch if this processor cannot feed a model of ``config``."""
        if self.image_size != config.vision.image_size:
            raise ValueError(
                f"the processor resizes images to {self.image_size} px but the model takes "
                f"{config.vision.image_size} px; use the processor of this model"
            )
        if self.max_length > config.text.max_length:
            raise ValueError(
                f"the processor pads texts to {self.max_length} tokens but the text tower has "
                f"{config.text.max_length} positions; use the processor of this model"
            )
        if self.vocab_size > config.text.vocab_size:
            raise ValueError(
                f"the processor's tokenizer has {self.vocab_size} tokens but the text tower's embedding has "
                f"{config.text.vocab_size} rows; use the processor of this model"
            )

    def __repr__(self) -> str:
        return f"SiglipProcessor(image_size={self.image_size}, max_length={self.max_length})"

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` [N, max_length] (and ``attention_mask`` if ``return_attention_mask``) for one text or a
        list of them."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise ValueError("texts must be a string or a non-empty list of strings")
        encodings = self._fixed.encode_batch(texts)
        tokens = {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long)}
        if self.return_attention_mask:
            tokens["attention_mask"] = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return tokens

    def preprocess(self, images: Any) -> torch.Tensor:
        """``pixel_values`` [N, 3, S, S] for one image (path, PIL image, array) or a list of them."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("got an empty list of images; pass at least one image")
        return preprocess_images(
            images, self.image_size, resample=self.resample, rescale_factor=self.rescale_factor,
            image_mean=self.image_mean, image_std=self.image_std, do_convert_rgb=self.do_convert_rgb,
        )  # fmt: skip

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None) -> BatchEncoding:
        """Model inputs: ``pixel_values`` for ``images``, ``input_ids`` / ``attention_mask`` for ``text``."""
        if images is None and text is None:
            raise ValueError("give images=, text= or both")
        batch = BatchEncoding()
        if text is not None:
            batch.update(self.tokenize(text))
        if images is not None:
            batch["pixel_values"] = self.preprocess(images)
        return batch

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, tokenizer_config.json and preprocessor_config.json (loadable by transformers)."""
        directory = Path(directory)
        tokenizer_config = {
            "pad_token": self.pad_token,
            "model_max_length": self.max_length,
            "padding_side": self.padding_side,
            "model_input_names": ["input_ids", "attention_mask"] if self.return_attention_mask else ["input_ids"],
            "processor_class": "SiglipProcessor",
            "tokenizer_class": "PreTrainedTokenizerFast",
            "prompt_template": self.prompt_template,
        }
        preprocessor_config = {
            "do_convert_rgb": self.do_convert_rgb, "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": list(self.image_mean), "image_std": list(self.image_std),
            "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
            "resample": int(self.resample), "rescale_factor": self.rescale_factor,
            "size": {"height": self.image_size, "width": self.image_size},
        }  # fmt: skip
        with staged_directory(directory) as stage:
            self.tokenizer.save(str(stage / TOKENIZER_FILE))
            files = ((TOKENIZER_CONFIG_FILE, tokenizer_config), (PREPROCESSOR_CONFIG_FILE, preprocessor_config))
            for name, content in files:
                (stage / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        return [directory / name for name in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, PREPROCESSOR_CONFIG_FILE)]


def _text_length(directory: Path, tokenizer_config: dict) -> int:
    """The text tower's length: config.json's (``text_config.max_position_embeddings``), else the tokenizer's
    ``model_max_length`` when it is a real length, else 64."""
    path = directory / "config.json"
    if not path.is_file():
        saved = tokenizer_config.get("model_max_length")
        return saved if is_integer(saved, 1) and saved <= 1_000_000 else DEFAULT_MAX_LENGTH
    data = read_json(path)
    own = data.get("vlmzoo")
    if isinstance(own, dict) and isinstance(own.get("text"), dict) and "max_length" in own["text"]:
        value = own["text"]["max_length"]
        if not is_integer(value, 1):
            raise InvalidFileError(path, f"must be a positive integer, got {value!r}", "vlmzoo.text.max_length")
        return value
    return text_config_length(path, data, DEFAULT_MAX_LENGTH)


def load_siglip_processor(
    path_or_repo_id: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    max_length: int | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> SiglipProcessor:
    """Load a `SiglipProcessor` from a checkpoint directory, a bundled name or a hub repo id.

    Reads tokenizer.json, the pad token from tokenizer_config.json, the image settings from
    preprocessor_config.json (or processor_config.json), and the text length from config.json unless
    ``max_length`` is given.
    """
    directory = resolve(
        path_or_repo_id, revision=revision, token=token, weights=False, local_files_only=local_files_only,
        cache_dir=cache_dir,
    )  # fmt: skip
    if not (directory / TOKENIZER_FILE).is_file():
        spm = (
            " (it holds the original SigLIP's SentencePiece spiece.model, whose tokenizer vlmzoo does not reproduce;"
            " the weights load with vlmzoo.from_pretrained)"
        )
        raise FileNotFoundError(
            f"{directory} has no {TOKENIZER_FILE}{spm if (directory / 'spiece.model').is_file() else ''}; a SigLIP "
            f"processor directory holds {TOKENIZER_FILE} and {PREPROCESSOR_CONFIG_FILE}"
        )
    settings = read_image_settings(directory, "SigLIP")
    settings.pop("config")
    text_settings: dict[str, Any] = {"pad_token": "<pad>", "padding_side": "right", "return_attention_mask": True}
    config: dict = {}
    if (directory / TOKENIZER_CONFIG_FILE).is_file():
        config = read_json(directory / TOKENIZER_CONFIG_FILE)
        text_settings["pad_token"] = token_content(config.get("pad_token")) or "<pad>"
        text_settings["padding_side"] = config.get("padding_side", "right")
        names = config.get("model_input_names")
        if names is not None:
            if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
                path = directory / TOKENIZER_CONFIG_FILE
                raise InvalidFileError(path, "must be a list of names", "model_input_names")
            text_settings["return_attention_mask"] = "attention_mask" in names
        template = config.get("prompt_template", DEFAULT_TEMPLATE)
        if not isinstance(template, str) or template.count("{}") != 1:
            path = directory / TOKENIZER_CONFIG_FILE
            raise InvalidFileError(path, f"must be a string with one '{{}}', got {template!r}", "prompt_template")
        text_settings["prompt_template"] = template
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    try:
        length = max_length or _text_length(directory, config)
        return SiglipProcessor(tokenizer, max_length=length, **text_settings, **settings)
    except (TypeError, ValueError) as err:
        raise InvalidFileError(directory, f"the processor files do not fit together: {err}") from None
