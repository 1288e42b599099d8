"""Random weights in the layout of big_vision's ``vae-oid.npz`` (PyTorch layout), for the VQ-VAE tests.

The layer list, from big_vision's mask decoder (``evaluators/proj/paligemma/transfers/segmentation.py``)
and encoder (``pp/proj/paligemma/segmentation.py``), is written out here on its own, so the tests do not
take it from the code they check.
"""

from __future__ import annotations

import numpy as np

# The layer list of big_vision's vae-oid.npz (PyTorch layout).
CONVS = {  # name: (out, in, k)
    "decoder.0": (128, 512, 1),
    **{f"decoder.{b}.net.{i}": (128, 128, k) for b in (2, 3) for i, k in ((0, 3), (2, 3), (4, 1))},
    "decoder.12": (1, 16, 1),
}
TRANSPOSED = {"decoder.4": (128, 128), "decoder.6": (128, 64), "decoder.8": (64, 32), "decoder.10": (32, 16)}  # in, out
# The encoder: four 4x4 stride-2 convolutions, two residual blocks, a 1x1 convolution to the codebook's 512.
ENCODER_CONVS = {  # name: (out, in, k)
    "encoder.0": (16, 1, 4),
    "encoder.2": (32, 16, 4),
    "encoder.4": (64, 32, 4),
    "encoder.6": (128, 64, 4),
    **{f"encoder.{b}.net.{i}": (128, 128, k) for b in (8, 9) for i, k in ((0, 3), (2, 3), (4, 1))},
    "encoder.10": (512, 128, 1),
}


def random_vae_weights(seed: int = 0, final_bias: float | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {"_vq_vae._embedding": rng.normal(size=(128, 512)).astype(np.float32)}
    for name, (out, inp, k) in CONVS.items():
        weights[f"{name}.weight"] = (rng.normal(size=(out, inp, k, k)) / np.sqrt(inp * k * k)).astype(np.float32)
        weights[f"{name}.bias"] = (rng.normal(size=(out,)) * 0.1).astype(np.float32)
    for name, (inp, out) in TRANSPOSED.items():
        weights[f"{name}.weight"] = (rng.normal(size=(inp, out, 4, 4)) / np.sqrt(inp * 4)).astype(np.float32)
        weights[f"{name}.bias"] = (rng.normal(size=(out,)) * 0.1).astype(np.float32)
    for name, (out, inp, k) in ENCODER_CONVS.items():  # the encoder half, as in the real file
        weights[f"{name}.weight"] = (rng.normal(size=(out, inp, k, k)) / np.sqrt(inp * k * k)).astype(np.float32)
        weights[f"{name}.bias"] = (rng.normal(size=(out,)) * 0.1).astype(np.float32)
    if final_bias is not None:
        weights["decoder.12.weight"][:] = 0
        weights["decoder.12.bias"][:] = final_bias
    return weights
