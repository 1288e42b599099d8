"""Turn images and prompts into model inputs (and token ids back into text), without transformers.

The shared parts live here (image preprocessing, the tokenizer and image-settings readers, the batch
type); each family's processor lives in its folder. `PaliGemmaProcessor` and `load_processor` are
re-exported from `vlmzoo.paligemma.processor`.
"""

from vlmzoo.paligemma.processor import EXTRA_TOKENS, IGNORE_INDEX, PaliGemmaProcessor, load_processor
from vlmzoo.processing.batch import BatchEncoding
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
