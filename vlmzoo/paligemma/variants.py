"""The public PaliGemma and PaliGemma 2 checkpoints' architectures, plus tiny ones for tests and demos."""

from __future__ import annotations

from vlmzoo.config import DecoderConfig, PaliGemmaConfig, ProjectorConfig, VisionConfig
from vlmzoo.variants import Variant

RESOLUTIONS = (224, 448, 896)

GEMMA_2B = DecoderConfig()
GEMMA2 = {
    "3b": DecoderConfig(
        block="gemma2", hidden_size=2304, intermediate_size=9216, num_layers=26, num_heads=8, num_kv_heads=4,
        head_dim=256, query_pre_attn_scalar=256, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        sliding_window=4096,
    ),
    "10b": DecoderConfig(
        block="gemma2", hidden_size=3584, intermediate_size=14336, num_layers=42, num_heads=16, num_kv_heads=8,
        head_dim=256, query_pre_attn_scalar=256, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        sliding_window=4096,
    ),
    "28b": DecoderConfig(
        block="gemma2", hidden_size=4608, intermediate_size=36864, num_layers=46, num_heads=32, num_kv_heads=16,
        head_dim=128, query_pre_attn_scalar=144, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        sliding_window=4096,
    ),
}  # fmt: skip


def _model(name: str, resolution: int, decoder: DecoderConfig) -> PaliGemmaConfig:
    vision = VisionConfig(image_size=resolution)
    projector = ProjectorConfig(input_size=vision.hidden_size, output_size=decoder.hidden_size)
    return PaliGemmaConfig(name=name, vision=vision, projector=projector, decoder=decoder)


TINY_VISION = VisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64, num_layers=2,
                           num_heads=4)  # fmt: skip
TINY_TOKENS = {"vocab_size": 2048, "image_token_id": 2047}


def tiny(name: str, decoder: DecoderConfig) -> PaliGemmaConfig:
    return PaliGemmaConfig(
        name=name,
        vision=TINY_VISION,
        projector=ProjectorConfig(input_size=TINY_VISION.hidden_size, output_size=decoder.hidden_size),
        decoder=decoder.replace(vocab_size=TINY_TOKENS["vocab_size"]),
        image_token_id=TINY_TOKENS["image_token_id"],
    )


# The bundled demo model: small enough to train on a laptop CPU and ship inside the package. Its
# vocabulary is vlmzoo.data.shapes_tokenizer's (1611 tokens, <image> last), padded to a multiple of 64.
SHAPES_DEMO_TOKENS = {"vocab_size": 1664, "image_token_id": 1610}
SHAPES_DEMO = PaliGemmaConfig(
    name="shapes-demo",
    vision=VisionConfig(image_size=64, patch_size=16, hidden_size=192, intermediate_size=768, num_layers=2,
                        num_heads=4),
    projector=ProjectorConfig(input_size=192, output_size=128),
    decoder=DecoderConfig(vocab_size=SHAPES_DEMO_TOKENS["vocab_size"], hidden_size=128, intermediate_size=384,
                          num_layers=3, num_heads=4, num_kv_heads=4, head_dim=32, max_position_embeddings=512),
    image_token_id=SHAPES_DEMO_TOKENS["image_token_id"],
)  # fmt: skip


def variants() -> list[Variant]:
    found = []
    for resolution in RESOLUTIONS:
        name = f"paligemma-3b-{resolution}"
        found.append(Variant(name, _model(name, resolution, GEMMA_2B), aliases=(f"paligemma-{resolution}",)))
    for size, decoder in GEMMA2.items():
        for resolution in RESOLUTIONS:
            name = f"paligemma2-{size}-{resolution}"
            aliases = (f"paligemma2-{resolution}",) if size == "3b" else ()
            found.append(Variant(name, _model(name, resolution, decoder), aliases=aliases))
    found.append(
        Variant(
            "paligemma-tiny",
            tiny(
                "paligemma-tiny",
                DecoderConfig(
                    hidden_size=64,
                    intermediate_size=128,
                    num_layers=2,
                    num_heads=4,
                    num_kv_heads=1,
                    head_dim=16,
                ),
            ),
            description="random-weight PaliGemma-shaped toy for tests and demos",
        )
    )
    found.append(Variant(
        "paligemma2-tiny",
        tiny("paligemma2-tiny", GEMMA2["3b"].replace(hidden_size=64, intermediate_size=128, num_layers=3,
                                                     num_heads=4, num_kv_heads=2, head_dim=16,
                                                     query_pre_attn_scalar=16, sliding_window=8)),
        description="random-weight PaliGemma 2-shaped toy for tests and demos",
    ))  # fmt: skip
    found.append(
        Variant(
            "shapes-demo",
            SHAPES_DEMO,
            description="trained on synthetic shapes, bundled with vlmzoo: vlmzoo.load('shapes-demo') works offline",
        )
    )
    return found
