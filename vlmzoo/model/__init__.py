"""The PaliGemma assembly: vision encoder → projector → Gemma decoder, built from a config."""

from vlmzoo.model.decoder import GemmaDecoder
from vlmzoo.model.masks import attention_mask
from vlmzoo.paligemma.model import PaliGemma, PaliGemmaOutput

__all__ = ["GemmaDecoder", "PaliGemma", "PaliGemmaOutput", "attention_mask"]
