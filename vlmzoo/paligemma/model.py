"""PaliGemma and PaliGemma 2 as one assembly of registry components chosen by the config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.checkpoints.saving import save_pretrained
from vlmzoo.components.parts import Parts
from vlmzoo.components.projector import Projector
from vlmzoo.config import PaliGemmaConfig
from vlmzoo.generation.engine import generate, stream
from vlmzoo.model.decoder import GemmaDecoder
from vlmzoo.model.masks import attention_mask
from vlmzoo.model.quantize import quantize_model
from vlmzoo.plugins import resolve_registries
from vlmzoo.registry import Registries

IGNORE_INDEX = -100


@dataclass
class PaliGemmaOutput:
    """What a forward pass returns: ``logits`` [B, T, V], and ``loss`` when labels were given."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass
class PreparedInputs:
    """Embeddings, positions and the prefix/padding facts a forward pass and a prefill share."""

    embeds: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    prefix: torch.Tensor


class PaliGemma(nn.Module):
    """SigLIP encoder → linear projector → Gemma decoder, each built from registry keys in the config."""

    def __init__(self, config: PaliGemmaConfig, registries: Registries | None = None) -> None:
        super().__init__()
        registries = resolve_registries(registries)
        self.config = config
        vision = config.vision
        vision_parts = Parts.resolve(registries, attention=vision.attention, norm=vision.norm, mlp=vision.mlp)
        self.vision_tower = registries.vision_encoder.get(vision.kind)(vision, vision_parts)
        self.multi_modal_projector = Projector(config.projector)
        self.language_model = GemmaDecoder(config.decoder, registries)
        #: The weight-only quantization scheme applied (``"int8"``, ``"int4"``), or None.
        self.quantization: str | None = None

    @property
    def device(self) -> torch.device:
        embed = self.language_model.embed_tokens
        return embed.weight.device if isinstance(embed, nn.Embedding) else embed.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the activations (and of the weights that are not quantized)."""
        embed = self.language_model.embed_tokens
        return embed.weight.dtype if isinstance(embed, nn.Embedding) else embed.dtype

    def num_parameters(self) -> int:
        """Parameters counted once each (the tied output head shares the embedding)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory, max_shard_size: int | str = "5GB", *, dequantize: bool = False):
        """Write config.json and safetensors in the Hugging Face layout (transformers loads it too).

        A quantized model is refused unless ``dequantize=True``, which writes its dequantized weights in
        the model's dtype (a float checkpoint that carries the quantization error).
        """
        return save_pretrained(self, directory, max_shard_size=max_shard_size, dequantize=dequantize)

    def quantize(self, scheme: str = "int8") -> PaliGemma:
        """Quantize the weights in place (``"int8"``, ``"int4"`` or a plugin's scheme); returns the model.

        The decoder's linear layers use ``scheme``, the output head int8; the vision tower, projector,
        norms and biases stay in floating point. See `vlmzoo.model.quantize`.
        """
        return quantize_model(self, scheme)

    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Generate new tokens [B, n] after the prompt; see `vlmzoo.generation.generate` for the options
        (``max_new_tokens``, ``sampler``, ``stop_at_eos``, ``seed``, sampler options such as ``top_p``)."""
        return generate(self, input_ids, pixel_values, **kwargs)

    def stream(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, **kwargs):
        """Iterate over `GenerationStep`s as tokens are made; same options as `generate`."""
        return stream(self, input_ids, pixel_values, **kwargs)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] → features [N, num_image_tokens, text hidden]."""
        return self.multi_modal_projector(self.vision_tower(pixel_values))

    def prepare(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> PreparedInputs:
        """Check the inputs, embed the text, put image features at the ``<image>`` tokens."""
        input_ids, attention_mask, token_type_ids = _check_inputs(input_ids, attention_mask, token_type_ids)
        embeds = self.language_model.embed(input_ids)
        is_image = input_ids == self.config.image_token_id
        n_image_tokens = int(is_image.sum())
        if pixel_values is None:
            if n_image_tokens:
                raise ValueError(
                    f"input_ids hold {n_image_tokens} <image> tokens but no pixel_values were given; "
                    "pass the images, or build inputs with the model's processor"
                )
        else:
            features = self.image_features(pixel_values.to(self.device))
            if n_image_tokens != features.shape[0] * features.shape[1]:
                raise ValueError(
                    f"input_ids hold {n_image_tokens} <image> tokens but pixel_values has {features.shape[0]} "
                    f"image(s) of {features.shape[1]} tokens each; each image needs exactly "
                    f"{features.shape[1]} <image> tokens (the processor lays them out)"
                )
            embeds = embeds.masked_scatter(is_image[..., None], features.to(embeds.dtype))
        valid = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return PreparedInputs(embeds, positions, valid, (token_type_ids == 0) & valid)

    def masks(self, prepared: PreparedInputs) -> dict[int | None, torch.Tensor]:
        """One prefix-LM mask per distinct window among the layers."""
        columns = torch.arange(prepared.valid.shape[1], device=prepared.valid.device)
        return {
            window: attention_mask(columns, columns, prepared.valid, prepared.prefix, prepared.prefix, window=window)
            for window in self.language_model.windows
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> PaliGemmaOutput:
        """Logits for every position (or the last ``logits_to_keep``), and the loss given ``labels``.

        Without ``token_type_ids`` the whole input is prefix (bidirectional), as the checkpoints read a
        prompt (transformers reads it as causal: pass ``token_type_ids`` of ones for that). Positions with
        ``attention_mask`` 0 are never attended to. ``labels`` use -100 for positions without loss and
        are shifted inside, as in Hugging Face models; they need ``token_type_ids``, since through a
        whole-prefix mask every position would see the tokens it is trained to predict.
        """
        if labels is not None and token_type_ids is None:
            raise ValueError(
                "labels need token_type_ids (0 for the prefix, 1 for the suffix the loss is on): without them "
                "the whole input is prefix, attended both ways, and each position would see its own target. "
                "Build training batches with the processor's suffixes=, which returns both."
            )
        prepared = self.prepare(input_ids, pixel_values, attention_mask, token_type_ids)
        hidden = self.language_model(prepared.embeds, self.masks(prepared), prepared.positions)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.language_model.logits(hidden)
        loss = None if labels is None else causal_lm_loss(logits, labels.to(logits.device))
        return PaliGemmaOutput(logits=logits, loss=loss)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's logits against the next label, ignoring -100."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape {list(logits.shape[:2])}, got {list(labels.shape)}")
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def _check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = list(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a [batch, length] tensor of token ids, got {shape}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor.shape != input_ids.shape:
            raise ValueError(
                f"{name} must have the shape of input_ids {list(input_ids.shape)}, got {list(tensor.shape)}"
            )
    return input_ids, attention_mask.to(input_ids.device), token_type_ids.to(input_ids.device)
