"""The public fixed-resolution SigLIP and SigLIP 2 checkpoints' architectures, plus tiny ones.

Names are the hub ids without ``google/``. SigLIP 2's fixed-resolution checkpoints are the same
architecture as SigLIP's with the Gemma vocabulary (256,000 tokens); its NaFlex ones are not (they take
variable-size patch sequences) and are not listed.
"""

from __future__ import annotations

from vlmzoo.config import VisionConfig
from vlmzoo.siglip.config import SiglipConfig, SiglipTextConfig
from vlmzoo.variants import Variant

# Tower shapes as (hidden, intermediate, layers, heads); text and image towers are the same shape.
SHAPES = {"base": (768, 3072, 12, 12), "large": (1024, 4096, 24, 16), "so400m": (1152, 4304, 27, 16)}
SIGLIP_VOCAB = 32000  # SigLIP's English SentencePiece vocabulary
SIGLIP2_VOCAB = 256000  # SigLIP 2: the Gemma tokenizer
#: (size, patch, resolutions) of each fixed-resolution checkpoint series.
SIGLIP = [("base", 16, (224, 256, 384, 512)), ("large", 16, (256, 384)), ("so400m", 14, (224, 384))]
SIGLIP2 = [("base", 16, (224, 256, 384, 512)), ("large", 16, (256, 384, 512)), ("so400m", 14, (224, 384)),
           ("so400m", 16, (256, 384, 512))]  # fmt: skip


def siglip_config(name: str, size: str, patch: int, resolution: int, vocab: int, text_length: int = 64) -> SiglipConfig:
    hidden, intermediate, layers, heads = SHAPES[size]
    tower = {"hidden_size": hidden, "intermediate_size": intermediate, "num_layers": layers, "num_heads": heads}
    return SiglipConfig(
        name=name,
        vision=VisionConfig(image_size=resolution, patch_size=patch, **tower),
        text=SiglipTextConfig(vocab_size=vocab, max_length=text_length, **tower),
    )


#: A random-weight toy for tests: the architecture at a few thousand parameters.
SIGLIP_TINY = SiglipConfig(
    name="siglip-tiny",
    vision=VisionConfig(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4),
    text=SiglipTextConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          max_length=16),
)  # fmt: skip


#: The bundled ``shapes-siglip`` model: trained by ``scripts/train_shapes_siglip.py`` on shape scenes and their
#: captions. Its image tower is shapes-demo's, so it can initialise shapes-demo's; its vocabulary is
#: vlmzoo.data.shapes_tokenizer's (1611 tokens).
SHAPES_SIGLIP = SiglipConfig(
    name="shapes-siglip",
    vision=VisionConfig(image_size=64, patch_size=16, hidden_size=192, intermediate_size=768, num_layers=2,
                        num_heads=4),
    text=SiglipTextConfig(vocab_size=1611, hidden_size=128, intermediate_size=512, num_layers=2, num_heads=4,
                          max_length=16, projection_size=192),
)  # fmt: skip


def variants() -> list[Variant]:
    found = []
    for series, vocab, table in (("siglip", SIGLIP_VOCAB, SIGLIP), ("siglip2", SIGLIP2_VOCAB, SIGLIP2)):
        for size, patch, resolutions in table:
            for resolution in resolutions:
                name = f"{series}-{size}-patch{patch}-{resolution}"
                # SigLIP So400m/14 at 224 was trained on 16-token texts; every other checkpoint on 64.
                length = 16 if name == "siglip-so400m-patch14-224" else 64
                found.append(
                    Variant(
                        name,
                        siglip_config(name, size, patch, resolution, vocab, length),
                        description=f"SigLIP{' 2' if series == 'siglip2' else ''} image-text model",
                    )
                )
    found.append(Variant("siglip-tiny", SIGLIP_TINY, description="random-weight SigLIP-shaped toy for tests"))
    bundled = "trained on synthetic shapes, bundled: vlmzoo.load('shapes-siglip') works offline"
    found.append(Variant("shapes-siglip", SHAPES_SIGLIP, description=bundled))
    return found
