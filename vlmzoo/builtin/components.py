"""Built-in components: attention kernels, norms, MLPs, decoder blocks, the SigLIP encoder, linear
kernels and weight-only quantization schemes."""

from vlmzoo.components import (
    EagerAttention,
    ExactGeluMLP,
    GatedGeluMLP,
    GeluMLP,
    Gemma2Block,
    GemmaBlock,
    GemmaRMSNorm,
    LayerNorm,
    SdpaAttention,
    SiglipVisionEncoder,
    cpu_kernels,
    linear,
    quantized,
)
from vlmzoo.hookspecs import hookimpl


@hookimpl
def register_components(registry):
    registry.attention.register("sdpa", SdpaAttention)
    registry.attention.register("eager", EagerAttention)
    registry.norm.register("layer_norm", LayerNorm)
    registry.norm.register("rms_norm", GemmaRMSNorm)
    registry.mlp.register("gelu", GeluMLP)
    registry.mlp.register("gelu_exact", ExactGeluMLP)
    registry.mlp.register("gated_gelu", GatedGeluMLP)
    registry.decoder_block.register("gemma", GemmaBlock)
    registry.decoder_block.register("gemma2", Gemma2Block)
    registry.vision_encoder.register("siglip", SiglipVisionEncoder)
    for name, kernel in {**linear.BUILTIN_KERNELS, **quantized.KERNELS, **cpu_kernels.KERNELS}.items():
        registry.linear_kernel.register(name, kernel)
    for name, scheme in quantized.SCHEMES.items():
        registry.quantization.register(name, scheme)
