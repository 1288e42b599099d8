"""Images and texts in, embeddings and zero-shot classes out: a SigLIP model with its processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlmzoo.siglip.processor import SiglipProcessor
from vlmzoo.siglip.tasks import Classification, Classify
from vlmzoo.tasks import get_postprocessor

__all__ = ["Classification", "ImageTextModel"]


class ImageTextModel:
    """A `SiglipModel` and the `SiglipProcessor` that feeds it: what `vlmzoo.load` returns for SigLIP.

    Examples:
        >>> clip = vlmzoo.load("google/siglip2-so400m-patch14-384")
        >>> clip.classify("cat.jpg", ["a cat", "a dog"]).best
        'a cat'
    """

    def __init__(self, model, processor: SiglipProcessor) -> None:
        processor.check_model(model.config)
        self.model = model
        self.processor = processor

    def __repr__(self) -> str:
        return f"ImageTextModel({getattr(self.model, 'name_or_path', self.model.config.name)!r})"

    @torch.no_grad()
    def embed_images(self, images: Any, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised image embeddings [N, D] for an image or a list (paths, PIL images, arrays)."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        out = []
        for start in range(0, len(images), batch_size):
            pixels = self.processor.preprocess(images[start : start + batch_size]).to(self.model.dtype)
            out.append(self.model.image_embeddings(pixels).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings [N, D] for a text or a list, padded as the model was trained."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.processor.tokenize(texts[start : start + batch_size])
            out.append(self.model.text_embeddings(tokens["input_ids"], tokens.get("attention_mask")).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def logits(self, images: Any, texts: str | Sequence[str]) -> torch.Tensor:
        """[N_images, N_texts] logits ``exp(t) * img . txt + b``; their sigmoid is each pair's match probability."""
        image_embeds, text_embeds = self.embed_images(images), self.embed_texts(texts)
        scale, bias = self.model.logit_scale.detach().float().cpu(), self.model.logit_bias.detach().float().cpu()
        return image_embeds @ text_embeds.T * scale.exp() + bias

    def classify(
        self, images: Any, labels: str | Sequence[str], template: str | None = None
    ) -> Classification | list[Classification]:
        """Zero-shot classification: each label, put into ``template`` (default: the processor's, "This is a
        photo of {}."), scored against each image with a per-label sigmoid probability (not a softmax).

        One image gives one `Classification`, a list gives a list.
        """
        return self.run("classify", images, labels, template=template)

    def run(self, task: str | Classify, images: Any, *args: Any, **options: Any):
        """Run a task by name on this image-text model (``"classify"``, or a plugin's task of the same kind)."""
        post = get_postprocessor(task) if isinstance(task, str) else task
        if not hasattr(post, "texts"):
            raise ValueError(
                f"task {getattr(post, 'name', task)!r} generates text, which an image-text model cannot do; run it "
                "on a vision-language model (PaliGemma)"
            )
        single = not isinstance(images, (list, tuple))
        labels, texts = post.texts(*args, default_template=self.processor.prompt_template, **options)
        logits = self.logits([images] if single else list(images), texts)
        results = [post.result(labels, texts, row) for row in logits]
        return results[0] if single else results
