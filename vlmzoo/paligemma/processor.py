"""PaliGemma processor: prompts + images → model inputs, and token ids → text.

Output matches transformers' ``PaliGemmaProcessor`` exactly (ids, masks, token types, labels, pixels)
so checkpoints behave as they were evaluated, without depending on transformers. The prompt layout and
labels are `vlmzoo.paligemma.prompts`, decoding `vlmzoo.paligemma.decoding`; the tokenizer and image
settings are read by the shared `vlmzoo.processing` modules. Batches are padded on the left so the last
position of every row is the last real token, which batched generation relies on.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from tokenizers import AddedToken, Tokenizer

from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.checkpoints.hub import resolve
from vlmzoo.errors import InvalidFileError, VlmzooError
from vlmzoo.paligemma.decoding import id_list, sequences_of, skipped_ids
from vlmzoo.paligemma.prompts import (
    EXTRA_TOKENS,
    IGNORE_INDEX,
    as_list,
    check_prompts,
    check_suffixes,
    encode_example,
    pad_rows,
    padded_width,
    suffix_labels,
)
from vlmzoo.processing.batch import BatchEncoding
from vlmzoo.processing.files import (
    MODEL_CONFIG_FILE,
    PREPROCESSOR_CONFIG_FILE,
    PROCESSOR_CONFIG_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    read_json,
    text_config_length,
)
from vlmzoo.processing.image_settings import image_config, read_image_settings
from vlmzoo.processing.images import ImageInput, preprocess_images
from vlmzoo.processing.tokenizer import load_tokenizer, token_content

__all__ = ["EXTRA_TOKENS", "IGNORE_INDEX", "BatchEncoding", "PaliGemmaProcessor", "load_processor"]

MASK_VAE_FILE = "mask_vae.safetensors"  # a model's own mask VQ-VAE, named by preprocessor_config.json's "mask_vae"
DEFAULT_MAX_LENGTH = 8192
_PATCH_SIZE = 14  # SigLIP So400m/14: image_seq_length = (image_size / 14) ** 2 when a config omits it
_DIR_CONTENTS_HINT = (
    "A PaliGemma processor directory contains tokenizer.json, tokenizer_config.json and either "
    "preprocessor_config.json (Hugging Face hub layout) or processor_config.json (newer transformers "
    "layout, image settings under 'image_processor'); config.json is optional."
)


def _one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value`` or the same argument under its transformers name; both at once is an error."""
    if alias_value is None:
        return value
    if value is not None:
        raise TypeError(f"got both {name}= and {alias}=; pass one ({alias} is transformers' name for {name})")
    return alias_value


def _is_batch_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4


class PaliGemmaProcessor:
    """Turns images + prompts (+ suffixes for training) into PaliGemma inputs; decodes outputs.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with Gemma's vocabulary. Like transformers, the processor
            registers ``<image>`` (special) and the ``<locNNNN>`` / ``<segNNN>`` tokens on it, adding any
            that are missing (this mutates the tokenizer).
        image_size: square input resolution of the vision tower (224, 448 or 896).
        num_image_tokens: image tokens per image (256, 1024 or 4096 for those resolutions).
        image_mean: per-channel mean subtracted after rescaling (0.5 maps pixels to [-1, 1]).
        image_std: per-channel divisor after the mean.
        rescale_factor: multiplies raw 0..255 pixels first (1/255).
        resample: PIL resampling filter for the square resize (bicubic, as SigLIP expects).
        do_convert_rgb: convert grayscale / palette / transparent images to RGB first.
        max_length: longest allowed sequence (image tokens + text); longer inputs raise ValueError.
        padding_side: "left" (default, needed for batched generation) or "right".
        mask_vae: the model's own mask VQ-VAE file for ``segment`` (``shapes-demo`` has one), or None for
            the default (big_vision's ``vae-oid.npz``). Saved beside the processor files.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        image_size: int,
        num_image_tokens: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        rescale_factor: float = 1 / 255,
        resample: int = PIL.Image.Resampling.BICUBIC,
        do_convert_rgb: bool = True,
        max_length: int = DEFAULT_MAX_LENGTH,
        image_token: str = "<image>",
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        pad_token: str = "<pad>",
        padding_side: str = "left",
        mask_vae: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(
                f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}; load one with "
                "tokenizers.Tokenizer.from_file('tokenizer.json') or use vlmzoo.processing.load_processor()."
            )
        if int(image_size) <= 0 or int(num_image_tokens) <= 0:
            raise ValueError(
                f"image_size and num_image_tokens must be positive, got {image_size} and {num_image_tokens}."
            )
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(
                f"image_mean and image_std need 3 values (RGB), got {list(image_mean)} and {list(image_std)}."
            )
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if int(max_length) <= int(num_image_tokens):
            raise ValueError(
                f"max_length={max_length} leaves no room for text after {num_image_tokens} image tokens; "
                "raise max_length."
            )
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        self.rescale_factor = float(rescale_factor)
        self.resample = PIL.Image.Resampling(int(resample))
        self.do_convert_rgb = bool(do_convert_rgb)
        self.max_length = int(max_length)
        self.padding_side = padding_side
        self.mask_vae = None if mask_vae is None else Path(mask_vae)
        self.image_token, self.bos_token, self.eos_token, self.pad_token = (
            image_token,
            bos_token,
            eos_token,
            pad_token,
        )

        # Same registration as transformers' PaliGemmaProcessor.__init__, in the same order, so ids agree.
        added = tokenizer.get_added_tokens_decoder()
        if not any(tok.content == image_token for tok in added.values()):
            tokenizer.add_special_tokens([AddedToken(image_token, normalized=False, special=True)])
        tokenizer.add_tokens(EXTRA_TOKENS)

        self.image_token_id = self._required_id(image_token, "image_token")
        self.bos_token_id = self._required_id(bos_token, "bos_token")
        self.eos_token_id = self._required_id(eos_token, "eos_token")
        self.pad_token_id = self._required_id(pad_token, "pad_token")
        self._refresh_skip_ids()

    # ------------------------------------------------------------------ helpers

    def _required_id(self, token: str, name: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(
                f"{name} {token!r} is not in the tokenizer's vocabulary; pass the right {name}= for this "
                "tokenizer (Gemma uses '<bos>', '<eos>', '<pad>')."
            )
        return int(token_id)

    def _refresh_skip_ids(self) -> None:
        """Ids dropped by ``skip_special_tokens``: special added tokens, but never loc/seg tokens."""
        special = (self.bos_token_id, self.eos_token_id, self.pad_token_id, self.image_token_id)
        self._skip_ids = skipped_ids(self.tokenizer, special)

    @property
    def vocab_size(self) -> int:
        """Number of token ids (including added tokens): the minimum embedding table size."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return (
            f"PaliGemmaProcessor(image_size={self.image_size}, num_image_tokens={self.num_image_tokens}, "
            f"vocab_size={self.vocab_size}, max_length={self.max_length}, padding_side={self.padding_side!r})"
        )

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **kwargs: Any) -> PaliGemmaProcessor:
        """Same as :func:`load_processor`."""
        return load_processor(path_or_repo_id, **kwargs)

    # ------------------------------------------------------------------ encoding

    def _normalize_images(self, images: Any) -> list[ImageInput]:
        if _is_batch_array(images):
            return list(images)
        images = as_list(images)
        for i, image in enumerate(images):
            if isinstance(image, (list, tuple)):
                raise ValueError(
                    f"image {i} is a list; PaliGemma takes exactly one image per prompt. Pass a flat list "
                    "with one image per prompt."
                )
        return images

    def encode_text(self, prompt: str, suffix: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids and token type ids for one example (no padding, no length check)."""
        return encode_example(
            self.tokenizer,
            prompt,
            suffix,
            image_token=self.image_token,
            num_image_tokens=self.num_image_tokens,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Sequence[str] | None = None,
        suffixes: str | Sequence[str] | None = None,
        padding: str | bool = "longest",
        return_tensors: str = "pt",
        *,
        text: str | Sequence[str] | None = None,
        suffix: str | Sequence[str] | None = None,
    ) -> BatchEncoding:
        """Build model inputs for a batch: one image per prompt (a single image with a single prompt).

        Returns a :class:`BatchEncoding` with ``input_ids``, ``attention_mask``, ``token_type_ids`` (0 prefix,
        1 suffix) as int64 [B, T], ``pixel_values`` float32 [B, 3, S, S] and, when `suffixes` are given,
        ``labels`` (suffix ids, -100 elsewhere). `padding`: "longest"/True (pad to the longest row),
        "max_length" (pad to ``max_length``) or False/"do_not_pad" (rows must then have equal length).
        ``text`` and ``suffix`` are transformers' names for ``prompts`` and ``suffixes``.
        """
        prompts = _one_of("prompts", prompts, "text", text)
        suffixes = _one_of("suffixes", suffixes, "suffix", suffix)
        if prompts is None:
            raise TypeError("the processor needs prompts= (or text=): one prompt per image, e.g. 'caption en'")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' (torch tensors).")
        prompt_list = check_prompts(prompts, self.image_token)
        image_list = self._normalize_images(images)
        if len(image_list) != len(prompt_list):
            raise ValueError(
                f"got {len(image_list)} image(s) for {len(prompt_list)} prompt(s); PaliGemma needs exactly "
                "one image per prompt. Pass a list of images as long as the list of prompts."
            )
        suffix_list = None if suffixes is None else check_suffixes(suffixes, len(prompt_list))

        rows: list[tuple[list[int], list[int]]] = []
        for i, prompt in enumerate(prompt_list):
            ids, types = self.encode_text(prompt, None if suffix_list is None else suffix_list[i])
            if len(ids) > self.max_length:
                what = "prompt and suffix" if suffix_list is not None else "prompt"
                raise ValueError(
                    f"example {i} is {len(ids)} tokens long ({self.num_image_tokens} image tokens + "
                    f"{len(ids) - self.num_image_tokens} text tokens), more than max_length="
                    f"{self.max_length}. Use a shorter {what}, or a checkpoint with a smaller image "
                    "resolution (fewer image tokens)."
                )
            rows.append((ids, types))

        width = padded_width([len(ids) for ids, _ in rows], padding, self.max_length)
        input_ids, attention_mask, token_type_ids = pad_rows(rows, width, self.pad_token_id, self.padding_side)
        out = BatchEncoding(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=preprocess_images(
                image_list,
                self.image_size,
                resample=self.resample,
                rescale_factor=self.rescale_factor,
                image_mean=self.image_mean,
                image_std=self.image_std,
                do_convert_rgb=self.do_convert_rgb,
            ),
        )
        if suffix_list is not None:
            out["labels"] = suffix_labels(input_ids, token_type_ids)
        return out

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        """Token ids → text. With `skip_special_tokens`, drops bos/eos/pad/image (and other special tokens)
        but keeps ``<locNNNN>`` / ``<segNNN>``, which carry detection boxes and segmentation masks."""
        ids = id_list(ids, "decode")
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._skip_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode a batch: a 2-D tensor / array or a list of id sequences."""
        sequences = sequences_of(sequences)
        return [self.decode(seq, skip_special_tokens=skip_special_tokens) for seq in sequences]

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, tokenizer_config.json and preprocessor_config.json (hub layout).

        The directory loads with :func:`load_processor` and with transformers'
        ``PaliGemmaProcessor.from_pretrained``. Returns the written paths. The files are written beside
        the directory and moved in once complete, so a failed save leaves the old files as they were.
        """
        directory = Path(directory)
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        tokenizer_config = {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": "<unk>" if "<unk>" in vocab else None,
            "mask_token": "<mask>" if "<mask>" in vocab else None,
            "extra_special_tokens": {"image_token": self.image_token},
            "padding_side": self.padding_side,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.max_length,
            "processor_class": "PaliGemmaProcessor",
        }
        preprocessor_config = {
            "do_convert_rgb": self.do_convert_rgb,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(self.image_mean),
            "image_processor_type": "SiglipImageProcessor",
            "image_seq_length": self.num_image_tokens,
            "image_std": list(self.image_std),
            "processor_class": "PaliGemmaProcessor",
            "resample": int(self.resample),
            "rescale_factor": self.rescale_factor,
            "size": {"height": self.image_size, "width": self.image_size},
        }
        names = [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, PREPROCESSOR_CONFIG_FILE]
        if self.mask_vae is not None:
            preprocessor_config["mask_vae"] = MASK_VAE_FILE
            names.append(MASK_VAE_FILE)
        with staged_directory(directory) as stage:
            if self.mask_vae is not None:
                shutil.copyfile(self.mask_vae, stage / MASK_VAE_FILE)
            self.tokenizer.save(str(stage / TOKENIZER_FILE))
            for name, content in (
                (TOKENIZER_CONFIG_FILE, tokenizer_config),
                (PREPROCESSOR_CONFIG_FILE, preprocessor_config),
            ):
                with open(stage / name, "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2, ensure_ascii=False)
                    f.write("\n")
        return [directory / name for name in names]


# ---------------------------------------------------------------------- loading


def _max_length(path: Path) -> int:
    return text_config_length(path, read_json(path), DEFAULT_MAX_LENGTH)


def load_processor(
    path_or_repo_id: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    max_length: int | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> PaliGemmaProcessor:
    """Load a :class:`PaliGemmaProcessor` from a local directory or a Hugging Face hub repo id.

    Reads tokenizer.json, tokenizer_config.json (special tokens), the image settings from
    processor_config.json (nested ``image_processor``) or preprocessor_config.json, and the max sequence
    length from config.json's ``text_config.max_position_embeddings`` (8192 when absent) unless
    `max_length` is given. Hub downloads fetch only these small files and honor HF_HUB_OFFLINE and the cache.
    Padding is always on the left (what batched generation needs), whatever tokenizer_config.json says.

    Args:
        path_or_repo_id: a local directory, a hub repo id or ``"shapes-demo"``.
        revision: hub branch, tag or commit.
        token: Hugging Face token for gated repos.
        max_length: the longest sequence allowed (default: the checkpoint's).
        local_files_only: use only the local cache, never the network.
        cache_dir: the Hugging Face cache directory to use.
    """
    directory = resolve(
        path_or_repo_id,
        revision=revision,
        token=token,
        weights=False,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )
    if not (directory / TOKENIZER_FILE).is_file():
        image_missing = image_config(directory) is None
        what = [TOKENIZER_FILE] + (
            [f"{PREPROCESSOR_CONFIG_FILE} or {PROCESSOR_CONFIG_FILE} (with 'image_processor')"] if image_missing else []
        )
        raise FileNotFoundError(
            f"{directory} is not a complete PaliGemma processor directory: missing {' and '.join(what)}. "
            f"{_DIR_CONTENTS_HINT}"
        )
    settings = read_image_settings(directory, "PaliGemma")
    config = settings.pop("config")
    config_path = image_config(directory)[1]
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "image_token": "<image>"}
    tokenizer_config_path = directory / TOKENIZER_CONFIG_FILE
    if tokenizer_config_path.is_file():
        tokenizer_config = read_json(tokenizer_config_path)
        for key in ("bos_token", "eos_token", "pad_token"):
            content = token_content(tokenizer_config.get(key))
            if content:
                special[key] = content
        extra = tokenizer_config.get("extra_special_tokens")
        if isinstance(extra, dict) and token_content(extra.get("image_token")):
            special["image_token"] = token_content(extra["image_token"])
    image_size = settings["image_size"]
    num_image_tokens = config.get("image_seq_length") or (image_size // _PATCH_SIZE) ** 2
    mask_vae = config.get("mask_vae")
    if mask_vae is not None:
        if not isinstance(mask_vae, str) or Path(mask_vae).name != mask_vae or not (directory / mask_vae).is_file():
            raise InvalidFileError(
                config_path,
                f"{mask_vae!r} is not a file beside it; name the model's mask VQ-VAE file or drop the field",
                "mask_vae",
            )
        mask_vae = directory / mask_vae

    if max_length is None:
        max_length = DEFAULT_MAX_LENGTH
        model_config_path = directory / MODEL_CONFIG_FILE
        if model_config_path.is_file():
            max_length = _max_length(model_config_path)

    try:
        return PaliGemmaProcessor(
            tokenizer,
            num_image_tokens=int(num_image_tokens),
            max_length=max_length,
            **settings,
            mask_vae=mask_vae,
            **special,
        )
    except VlmzooError:
        raise
    except (TypeError, ValueError) as err:  # settings that fit their types but not each other
        raise InvalidFileError(directory, f"the processor files do not fit together: {err}") from None
