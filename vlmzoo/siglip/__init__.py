"""SigLIP: image-text models trained with the pairwise sigmoid loss, as a second family of the zoo.

Examples:
    >>> import vlmzoo
    >>> clip = vlmzoo.load("google/siglip2-so400m-patch14-384")
    >>> clip.classify("cat.jpg", ["a cat", "a dog"]).best
    'a cat'
"""

from vlmzoo.siglip.config import SiglipConfig, SiglipTextConfig
from vlmzoo.siglip.model import AttentionPoolingHead, SiglipModel, SiglipOutput, SiglipTextTower
from vlmzoo.siglip.processor import SiglipProcessor, load_siglip_processor

__all__ = [
    "AttentionPoolingHead",
    "SiglipConfig",
    "SiglipModel",
    "SiglipOutput",
    "SiglipProcessor",
    "SiglipTextConfig",
    "SiglipTextTower",
    "load_siglip_processor",
]
