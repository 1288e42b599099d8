"""Turn images and prompts into PaliGemma inputs (and token ids back into text), without transformers."""

from vlmzoo.paligemma.processor import EXTRA_TOKENS, IGNORE_INDEX, BatchEncoding, PaliGemmaProcessor, load_processor
from vlmzoo.processing.images import ImageInput, ImageLoadError, load_image, preprocess_images, to_rgb_array

__all__ = [
    "EXTRA_TOKENS",
    "IGNORE_INDEX",
    "BatchEncoding",
    "ImageInput",
    "ImageLoadError",
    "PaliGemmaProcessor",
    "load_image",
    "load_processor",
    "preprocess_images",
    "to_rgb_array",
]
