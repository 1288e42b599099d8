"""PaliGemma processor: prompts + images → model inputs, and token ids → text.

Output matches transformers' ``PaliGemmaProcessor`` exactly (ids, masks, token types, labels, pixels)
so checkpoints behave as they were evaluated, without depending on transformers. The layout is::

    <image> * num_image_tokens + <bos> + prompt + "\\n" [+ suffix + <eos>]

The prefix (image tokens, ``<bos>``, prompt and the newline) is tokenized as *one* string, exactly as
transformers does, so the newline may merge with the prompt's last characters in the BPE; the suffix
(with ``<eos>`` appended as text) is tokenized separately. Batches are padded on the left so the last
position of every row is the last real token, which batched generation relies on.
"""

from __future__ import annotations

import json
import os
import re
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
from vlmzoo.processing.images import ImageInput, preprocess_images
from vlmzoo.values import is_finite_number, is_integer

__all__ = ["BatchEncoding", "PaliGemmaProcessor", "load_processor", "EXTRA_TOKENS", "IGNORE_INDEX"]

#: Label value ignored by the loss (PyTorch's cross-entropy default).
IGNORE_INDEX = -100
#: Detection / segmentation tokens PaliGemma adds to the Gemma vocabulary (transformers adds them too).
EXTRA_TOKENS = [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)]
_LOC_SEG_RE = re.compile(r"<(?:loc\d{4}|seg\d{3})>")

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
MASK_VAE_FILE = "mask_vae.safetensors"  # a model's own mask VQ-VAE, named by preprocessor_config.json's "mask_vae"
PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"  # hub layout: image settings at top level
PROCESSOR_CONFIG_FILE = "processor_config.json"  # newer transformers: image settings under "image_processor"
MODEL_CONFIG_FILE = "config.json"
DEFAULT_MAX_LENGTH = 8192
_PATCH_SIZE = 14  # SigLIP So400m/14: image_seq_length = (image_size / 14) ** 2 when a config omits it
_DIR_CONTENTS_HINT = (
    "A PaliGemma processor directory contains tokenizer.json, tokenizer_config.json and either "
    "preprocessor_config.json (Hugging Face hub layout) or processor_config.json (newer transformers "
    "layout, image settings under 'image_processor'); config.json is optional."
)


class BatchEncoding(dict):
    """A dict of model inputs with attribute access (``enc.input_ids``) and ``.to(device)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; available: {', '.join(self.keys())}") from None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BatchEncoding:
        """Move tensors to `device`; `dtype` applies to floating tensors only (pixel_values), not ids."""
        out = BatchEncoding()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            out[key] = value
        return out


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


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
        skip = {self.bos_token_id, self.eos_token_id, self.pad_token_id, self.image_token_id}
        for token_id, token in self.tokenizer.get_added_tokens_decoder().items():
            if token.special:
                skip.add(int(token_id))
        self._skip_ids = frozenset(i for i in skip if not _LOC_SEG_RE.fullmatch(self.tokenizer.id_to_token(i) or ""))

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

    def _normalize_prompts(self, prompts: str | Sequence[str]) -> list[str]:
        prompts = _as_list(prompts)
        if not prompts:
            raise ValueError("got an empty list of prompts; pass at least one prompt (it may be '').")
        out = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt {i} is a {type(prompt).__name__}, expected a string.")
            # transformers accepts an explicit leading "<image>" placeholder; it means the same thing.
            if prompt.startswith(self.image_token):
                prompt = prompt[len(self.image_token) :]
            if self.image_token in prompt:
                raise ValueError(
                    f"prompt {i} contains {self.image_token!r} in its text; the processor inserts the image "
                    "tokens itself (one image per prompt). Remove it from the prompt."
                )
            out.append(prompt)
        return out

    def _normalize_images(self, images: Any) -> list[ImageInput]:
        if _is_batch_array(images):
            return list(images)
        images = _as_list(images)
        for i, image in enumerate(images):
            if isinstance(image, (list, tuple)):
                raise ValueError(
                    f"image {i} is a list; PaliGemma takes exactly one image per prompt. Pass a flat list "
                    "with one image per prompt."
                )
        return images

    def encode_text(self, prompt: str, suffix: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids and token type ids for one example (no padding, no length check)."""
        prefix = self.image_token * self.num_image_tokens + self.bos_token + prompt + "\n"
        ids = self.tokenizer.encode(prefix, add_special_tokens=False).ids
        types = [0] * len(ids)
        if suffix is not None:
            suffix_ids = self.tokenizer.encode(suffix + self.eos_token, add_special_tokens=False).ids
            ids = ids + suffix_ids
            types = types + [1] * len(suffix_ids)
        return ids, types

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
        prompt_list = self._normalize_prompts(prompts)
        image_list = self._normalize_images(images)
        if len(image_list) != len(prompt_list):
            raise ValueError(
                f"got {len(image_list)} image(s) for {len(prompt_list)} prompt(s); PaliGemma needs exactly "
                "one image per prompt. Pass a list of images as long as the list of prompts."
            )
        suffix_list: list[str] | None = None
        if suffixes is not None:
            suffix_list = _as_list(suffixes)
            if len(suffix_list) != len(prompt_list):
                raise ValueError(
                    f"got {len(suffix_list)} suffix(es) for {len(prompt_list)} prompt(s); pass one suffix "
                    "per prompt (or suffixes=None for inference)."
                )
            for i, suffix in enumerate(suffix_list):
                if not isinstance(suffix, str):
                    raise TypeError(f"suffix {i} is a {type(suffix).__name__}, expected a string.")

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

        lengths = [len(ids) for ids, _ in rows]
        if padding in ("longest", True):
            width = max(lengths)
        elif padding == "max_length":
            width = self.max_length
        elif padding in (False, "do_not_pad"):
            if len(set(lengths)) > 1:
                raise ValueError(f"rows have different lengths {lengths} and padding is off; use padding='longest'.")
            width = lengths[0]
        else:
            raise ValueError(f"padding={padding!r} is not supported; use 'longest', 'max_length' or False.")

        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        token_type_ids = torch.zeros((batch, width), dtype=torch.long)
        for b, (ids, types) in enumerate(rows):
            span = slice(width - len(ids), width) if self.padding_side == "left" else slice(0, len(ids))
            input_ids[b, span] = torch.tensor(ids, dtype=torch.long)
            token_type_ids[b, span] = torch.tensor(types, dtype=torch.long)
            attention_mask[b, span] = 1

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
            out["labels"] = input_ids.masked_fill(token_type_ids == 0, IGNORE_INDEX)
        return out

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _to_id_list(ids: Any, what: str) -> list[int]:
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            if ids.ndim == 2 and ids.shape[0] == 1:
                ids = ids[0]
            if ids.ndim > 1:
                raise ValueError(
                    f"{what} got ids of shape {tuple(ids.shape)}; decode takes one sequence, use "
                    "batch_decode for a batch."
                )
            return [int(i) for i in ids.reshape(-1).tolist()]
        if isinstance(ids, (int, np.integer)):
            return [int(ids)]
        ids = list(ids)
        if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
            ids = list(ids[0])
        if any(isinstance(i, (list, tuple)) for i in ids):
            raise ValueError(f"{what} got nested lists; use batch_decode for a batch.")
        return [int(i) for i in ids]

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        """Token ids → text. With `skip_special_tokens`, drops bos/eos/pad/image (and other special tokens)
        but keeps ``<locNNNN>`` / ``<segNNN>``, which carry detection boxes and segmentation masks."""
        id_list = self._to_id_list(ids, "decode")
        if skip_special_tokens:
            id_list = [i for i in id_list if i not in self._skip_ids]
        return self.tokenizer.decode(id_list, skip_special_tokens=False)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode a batch: a 2-D tensor / array or a list of id sequences."""
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            if sequences.ndim == 1:
                sequences = sequences[None]
            if sequences.ndim != 2:
                raise ValueError(f"batch_decode expects a 2-D batch of ids, got shape {tuple(sequences.shape)}.")
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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InvalidFileError(
            path, f"not valid JSON ({err}); re-download or re-save the processor files"
        ) from None
    if not isinstance(data, dict):
        raise InvalidFileError(path, f"must hold a JSON object, not a {type(data).__name__}")
    return data


def _check_image_config(config: dict, path: Path) -> None:
    """Every image setting load_processor reads has the type it needs, or the error names the field."""
    checks = {
        "image_seq_length": (lambda v: v is None or is_integer(v, 1), "a positive integer"),
        "image_mean": (lambda v: is_finite_number(v) or (isinstance(v, list) and len(v) == 3
                                                   and all(map(is_finite_number, v))), "3 numbers (R, G, B)"),
        "image_std": (lambda v: (is_finite_number(v) and v != 0) or (isinstance(v, list) and len(v) == 3
                                                             and all(is_finite_number(x) and x != 0 for x in v)),
                      "3 non-zero numbers (R, G, B)"),
        "rescale_factor": (lambda v: is_finite_number(v) and v > 0, "a positive number"),
        "resample": (lambda v: v is None or (is_integer(v, 0) and v <= 5), "a PIL resampling filter number (0-5)"),
        **{flag: (lambda v: v is None or isinstance(v, bool), "true or false")
           for flag in ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize")},
    }  # fmt: skip
    for field, (ok, expected) in checks.items():
        if field in config and not ok(config[field]):
            raise InvalidFileError(path, f"must be {expected}, got {config[field]!r}", field)


def token_content(value: Any) -> str | None:
    """Special tokens appear as plain strings or as AddedToken dicts ({"content": ...}) in configs."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _image_config(directory: Path) -> tuple[dict, Path] | None:
    """Image processor settings, with transformers' priority: nested processor_config.json first."""
    processor_path = directory / PROCESSOR_CONFIG_FILE
    if processor_path.is_file():
        nested = _read_json(processor_path).get("image_processor")
        if isinstance(nested, dict):
            return nested, processor_path
    preprocessor_path = directory / PREPROCESSOR_CONFIG_FILE
    if preprocessor_path.is_file():
        return _read_json(preprocessor_path), preprocessor_path
    return None


def _image_size(config: dict, source: Path) -> int:
    size = config.get("size", {"height": 224, "width": 224})
    if is_integer(size, 1):
        return size
    if isinstance(size, dict) and is_integer(size.get("height"), 1) and is_integer(size.get("width"), 1):
        if size["height"] != size["width"]:
            raise InvalidFileError(
                source, f"{size} is not square; PaliGemma expects a square resolution (224, 448 or 896)", "size"
            )
        return int(size["height"])
    raise InvalidFileError(source, f"{size!r} should be {{'height': N, 'width': N}} with positive integers", "size")


def load_tokenizer(path: Path) -> Tokenizer:
    """A ``tokenizer.json`` as a ``tokenizers.Tokenizer``; a damaged file raises `InvalidFileError` naming it."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises plain Exception for every parse problem
        problem = " ".join(str(err).split()) or type(err).__name__
        raise InvalidFileError(
            path, f"cannot be read as a tokenizer ({problem}); download or save the processor files again"
        ) from None


def read_image_settings(directory: Path, model: str) -> dict[str, Any]:
    """The image settings of a processor directory, read as transformers reads them, checked field by field.

    Returns the keyword arguments a processor takes (``image_size``, ``image_mean``, ``image_std``,
    ``rescale_factor``, ``resample``, ``do_convert_rgb``) and the raw settings under ``"config"``. ``model``
    names the model family in error messages.
    """
    image_cfg = _image_config(directory)
    if image_cfg is None:
        raise FileNotFoundError(
            f"{directory} is not a complete {model} processor directory: missing {PREPROCESSOR_CONFIG_FILE} or "
            f"{PROCESSOR_CONFIG_FILE} (with 'image_processor')"
        )
    config, config_path = image_cfg
    _check_image_config(config, config_path)
    if config.get("do_resize") is False:
        raise InvalidFileError(
            config_path, f"is false, but {model} needs images resized to a fixed size; set it to true", "do_resize"
        )
    mean = config.get("image_mean", [0.5, 0.5, 0.5])
    std = config.get("image_std", [0.5, 0.5, 0.5])
    mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
    std = [std] * 3 if isinstance(std, (int, float)) else std
    if config.get("do_normalize") is False:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    resample = config.get("resample")
    do_convert_rgb = config.get("do_convert_rgb")
    return {
        "image_size": _image_size(config, config_path),
        "image_mean": mean,
        "image_std": std,
        "rescale_factor": config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) is not False else 1.0,
        "resample": PIL.Image.Resampling.BICUBIC if resample is None else resample,
        "do_convert_rgb": True if do_convert_rgb is None else bool(do_convert_rgb),
        "config": config,
    }


def _max_length(path: Path) -> int:
    text_config = _read_json(path).get("text_config")
    if text_config is None:
        return DEFAULT_MAX_LENGTH
    if not isinstance(text_config, dict):
        raise InvalidFileError(path, f"must be an object, not a {type(text_config).__name__}", "text_config")
    value = text_config.get("max_position_embeddings")
    if value is None:
        return DEFAULT_MAX_LENGTH
    if not is_integer(value, 1):
        field = "text_config.max_position_embeddings"
        raise InvalidFileError(path, f"must be a positive integer, got {value!r}", field)
    return value


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
        image_missing = _image_config(directory) is None
        what = [TOKENIZER_FILE] + (
            [f"{PREPROCESSOR_CONFIG_FILE} or {PROCESSOR_CONFIG_FILE} (with 'image_processor')"] if image_missing else []
        )
        raise FileNotFoundError(
            f"{directory} is not a complete PaliGemma processor directory: missing {' and '.join(what)}. "
            f"{_DIR_CONTENTS_HINT}"
        )
    settings = read_image_settings(directory, "PaliGemma")
    config = settings.pop("config")
    config_path = _image_config(directory)[1]
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "image_token": "<image>"}
    tokenizer_config_path = directory / TOKENIZER_CONFIG_FILE
    if tokenizer_config_path.is_file():
        tokenizer_config = _read_json(tokenizer_config_path)
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
