"""Images and prompts in, text out: a model together with its processor."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from vlmzoo.generation import GenerationStep
from vlmzoo.processing import PaliGemmaProcessor, load_processor, to_rgb_array
from vlmzoo.tasks import Postprocessor, TaskResult, prepare_task
from vlmzoo.tasks.scoring import parse_scored


class VisionLanguageModel:
    """A `PaliGemma` model and the `PaliGemmaProcessor` that feeds it.

    Examples:
        >>> vlm = vlmzoo.load("google/paligemma2-3b-mix-224")
        >>> vlm.generate("cat.jpg", "caption en")
        'a cat sleeping on a sofa'
    """

    def __init__(self, model, processor: PaliGemmaProcessor, *, compile: bool = False) -> None:
        if processor.num_image_tokens != model.config.num_image_tokens:
            raise ValueError(
                f"the processor lays out {processor.num_image_tokens} image tokens but the model expects "
                f"{model.config.num_image_tokens}; load both from the same checkpoint"
            )
        self.model = model
        self.processor = processor
        #: Whether `generate` and `stream` compile the decode step by default.
        self.compile = compile

    def __repr__(self) -> str:
        return f"VisionLanguageModel({getattr(self.model, 'name_or_path', self.model.config.name)!r})"

    def _inputs(self, images: Any, prompts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.processor(images=images, prompts=prompts)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def generate(
        self,
        images: Any,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        sampler: Any = "greedy",
        skip_special_tokens: bool = True,
        **options: Any,
    ) -> str | list[str]:
        """Answer one prompt per image; a single prompt string gives a string, a list gives a list.

        ``options`` go to `vlmzoo.generation.generate`: ``seed``, ``stop_at_eos``, and sampler options
        such as ``temperature`` or ``top_p``. ``<loc>`` and ``<seg>`` tokens are kept in the text.

        Args:
            images: one image (a path, a PIL image, an array or a tensor) or a list of them.
            prompts: one prompt, or one per image.
            max_new_tokens: the most tokens to generate per image.
            sampler: a sampler name (``"greedy"``, ``"temperature+top_p"``) or object.
            skip_special_tokens: leave ``<eos>``, ``<pad>`` and the like out of the text.
            **options: ``seed``, ``stop_at_eos``, sampler options (``temperature``, ``top_p``...).

        Returns:
            The answer for a single prompt string, else a list of answers.
        """
        options.setdefault("compile", self.compile)
        tokens = self.model.generate(
            **self._inputs(images, prompts), max_new_tokens=max_new_tokens, sampler=sampler, **options
        )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=skip_special_tokens)
        return texts[0] if isinstance(prompts, str) else texts

    def stream(
        self,
        image: Any,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        sampler: Any = "greedy",
        skip_special_tokens: bool = True,
        **options: Any,
    ) -> Iterator[str]:
        """Yield pieces of text as tokens are made; joined, they equal `generate`'s answer.

        Args:
            image: one image.
            prompt: one prompt.
            max_new_tokens: the most tokens to generate.
            sampler: a sampler name or object.
            skip_special_tokens: leave special tokens out of the text.
            **options: as for `generate`.
        """
        if not isinstance(prompt, str):
            raise TypeError("stream() takes one prompt; use generate() for a batch")
        options.setdefault("compile", self.compile)
        ids: list[int] = []
        shown = ""
        for step in self.model.stream(
            **self._inputs(image, prompt), max_new_tokens=max_new_tokens, sampler=sampler, **options
        ):
            if bool(step.finished[0]) and int(step.tokens[0]) == self.processor.pad_token_id:
                break
            ids.append(int(step.tokens[0]))
            text = self.processor.decode(ids, skip_special_tokens=skip_special_tokens)
            if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the rest
                continue
            if len(text) > len(shown):
                yield text[len(shown) :]
            shown = text

    # ------------------------------------------------------------------ tasks

    def run(
        self,
        task: str | Postprocessor,
        images: Any,
        *prompt_args: Any,
        max_new_tokens: int | None = None,
        sampler: Any = "greedy",
        generate_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> TaskResult | list[TaskResult]:
        """Run a task by name (or a post-processor object): build its prompt, generate, parse.

        ``images`` is one image (→ one `TaskResult`) or a list (→ a list, generated as one batch).
        ``prompt_args`` and the ``options`` named in the task's ``prompt`` signature build the prompt
        (e.g. ``objects``, ``question``, ``lang``); the other ``options`` build the post-processor (e.g.
        ``bins``, ``vae``). ``max_new_tokens`` defaults to the task's budget; ``sampler`` and
        ``generate_options`` (``seed``, ``temperature``, ``callback``...) go to the model's ``generate``.
        Boxes and masks are in pixels of each original image; each object's ``score`` is the geometric mean
        of the probabilities the model gave its tokens (four ``<loc>``, any ``<seg>``, the label; see
        `vlmzoo.tasks.scoring`), and of repeated boxes the higher-scored one stays (``repeat_iou``).

        Args:
            task: a registered task name (``"detect"``, ``"caption"``, a plugin's) or a post-processor.
            images: one image or a list of images.
            *prompt_args: what the task's prompt takes first (the objects of ``detect``, a question).
            max_new_tokens: the most tokens to generate (default: the task's budget).
            sampler: a sampler name or object.
            generate_options: more options for the model's ``generate`` (``seed``, ``callback``...).
            **options: prompt options (``objects``, ``question``, ``lang``) and post-processor options
                (``bins``, ``vae``).

        Returns:
            A `TaskResult` (or the task's subclass) for one image, a list of them for a list.
        """
        if task == "segment" and "vae" not in options and self.processor.mask_vae is not None:
            options["vae"] = self.processor.mask_vae  # the model's own VQ-VAE (shapes-demo ships one)
        post, prompt = prepare_task(task, *prompt_args, **options)
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4
        )
        arrays = [to_rgb_array(image) for image in ([images] if single else list(images))]
        if not arrays:
            raise ValueError("got an empty list of images; pass at least one image")
        options = dict(generate_options or {})
        user_callback = options.pop("callback", None)
        chosen: list[torch.Tensor] = []

        def record(step: GenerationStep) -> None:
            chosen.append(
                torch.softmax(step.logits, dim=-1).gather(1, step.tokens[:, None].to(step.logits.device))[:, 0]
            )
            if user_callback is not None:
                user_callback(step)

        tokens = self.model.generate(
            **self._inputs(arrays, [prompt] * len(arrays)),
            max_new_tokens=max_new_tokens or post.max_new_tokens,
            sampler=sampler,
            callback=record,
            **options,
        )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        probabilities = torch.stack(chosen, dim=1).cpu()
        results = []
        for row, (text, array) in enumerate(zip(texts, arrays, strict=True)):
            size = (array.shape[1], array.shape[0])
            ids, chances = tokens[row].tolist(), probabilities[row].tolist()
            results.append(parse_scored(post, text, size, ids, chances, self.processor))
        return results[0] if single else results

    def detect(self, images: Any, objects: str | Sequence[str], **options: Any) -> TaskResult | list[TaskResult]:
        """Boxes for the named objects (``detect cat ; dog``); options as in `run` (e.g. ``bins=1024``)."""
        return self.run("detect", images, objects, **options)

    def segment(self, images: Any, objects: str | Sequence[str], **options: Any) -> TaskResult | list[TaskResult]:
        """Boxes and masks for the named objects (``segment cat``), decoded by the model's own mask VQ-VAE when
        its processor names one, else by ``vae=`` or the default (see `vlmzoo.tasks.Segment`)."""
        return self.run("segment", images, objects, **options)

    def caption(self, images: Any, lang: str = "en", **options: Any) -> TaskResult | list[TaskResult]:
        """A caption (``caption en``; ``detail=True`` asks ``describe en``); the answer is ``.text``."""
        return self.run("caption", images, lang=lang, **options)

    def ocr(self, images: Any, **options: Any) -> TaskResult | list[TaskResult]:
        """The text in the image (``ocr``); the answer is ``.text``."""
        return self.run("ocr", images, **options)

    def answer(self, images: Any, question: str, lang: str = "en", **options: Any) -> TaskResult | list[TaskResult]:
        """Answer a question about the image (``answer en {question}``); the answer is ``.text``."""
        return self.run("answer", images, question, lang=lang, **options)


def _family_of_checkpoint(path_or_repo_id: str | os.PathLike, where: dict[str, Any]):
    """The registered non-PaliGemma family whose config.json the checkpoint holds, or None."""
    from vlmzoo.checkpoints.hub import resolve
    from vlmzoo.checkpoints.loading import read_json_object
    from vlmzoo.families import family_of_json
    from vlmzoo.plugins import get_registries

    path = resolve(path_or_repo_id, weights=False, **where) / "config.json"
    return family_of_json(read_json_object(path), get_registries()) if path.is_file() else None


def load(
    path_or_repo_id: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = "auto",
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    quantize: str | None = None,
    compile: bool = False,
    **options: Any,
) -> VisionLanguageModel:
    """Load a checkpoint's model and processor (a local directory or a hub repo id).

    A checkpoint of another registered model family gets that family's object instead: a SigLIP
    checkpoint gives a `vlmzoo.siglip.pipeline.ImageTextModel` (``classify``, ``embed_images``,
    ``embed_texts``).

    The processor is loaded first: a missing or damaged tokenizer is reported before gigabytes of
    weights are read. ``quantize="int8"`` or ``"int4"`` loads the decoder's weights quantized (see
    `vlmzoo.from_pretrained`); ``compile=True`` makes generation compile its decode step (see
    `vlmzoo.generation.stream`). Other ``options`` go to `vlmzoo.from_pretrained` (``torch_dtype``,
    ``device_map``, ``attn_implementation``, ...).

    Args:
        path_or_repo_id: a local checkpoint directory, a hub repo id or ``"shapes-demo"``.
        dtype: the weights' dtype; default the checkpoint's own.
        device: ``"auto"`` (the default: CUDA when present, else MPS, XPU, CPU), ``"cpu"``,
            ``"cuda:1"``...
        revision: hub branch, tag or commit.
        token: Hugging Face token for gated repos (default: ``HF_TOKEN`` or the saved login).
        local_files_only: use only the local cache, never the network.
        cache_dir: the Hugging Face cache directory to use.
        quantize: ``"int8"`` or ``"int4"`` weight-only quantization of the decoder.
        compile: compile the decode step of every generation.
        **options: more `vlmzoo.from_pretrained` options.

    Returns:
        A `VisionLanguageModel`: the model and its processor, with ``generate``, ``detect``, ...
    """
    from vlmzoo.checkpoints import from_pretrained

    where = {"revision": revision, "token": token, "local_files_only": local_files_only, "cache_dir": cache_dir}
    family = _family_of_checkpoint(path_or_repo_id, where)
    if family is not None:  # another model family (SigLIP): its own processor and its own pipeline object
        if compile or quantize is not None:
            raise ValueError(
                f"compile= and quantize= apply to PaliGemma generation; {path_or_repo_id} is {family.name}"
            )
        processor = family.load_processor(path_or_repo_id, **where)
        model = from_pretrained(path_or_repo_id, dtype=dtype, device=device, **where, **options)
        return family.pipeline(model, processor)
    processor = load_processor(path_or_repo_id, **where)
    model = from_pretrained(path_or_repo_id, dtype=dtype, device=device, quantize=quantize, **where, **options)
    return VisionLanguageModel(model, processor, compile=compile)
