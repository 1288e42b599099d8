"""Training a VQ-VAE for masks in the layout of big_vision's ``vae-oid.npz``.

The trained file loads wherever ``vae-oid.npz`` does (`vlmzoo.tasks.load_mask_decoder`,
`vlmzoo.tasks.load_mask_encoder`, ``get_postprocessor("segment", vae=...)``): the same keys, shapes and
code grid (16 codes of a 128-row, 512-d codebook). The bundled ``shapes-demo`` model ships one trained
on the masks of the shapes generator (``scripts/train_mask_vae.py``).

The recipe is the usual VQ-VAE one (van den Oord et al., 2017): the encoder's 4x4 grid is snapped to
the nearest codebook rows, gradients pass straight through the snap, and the loss is the decoder's
binary cross-entropy against the 64x64 crop plus the codebook and commitment terms. Codebook rows are
started from encoder outputs, and a row no cell picked during a step is moved to a random cell's
output, so all 128 codes stay in use.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.progress import progress_bar
from vlmzoo.tasks.mask_decoding import CODE_DIM, GRID, NUM_CODES, MaskDecoder
from vlmzoo.tasks.mask_encoding import MaskEncoder, nearest_codes

__all__ = ["MaskVae", "save_mask_vae", "train_mask_vae"]

#: Weight of the commitment term (the encoder's pull toward its chosen code).
COMMITMENT = 0.25


class MaskVae(nn.Module):
    """The encoder and decoder halves around one shared codebook."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_half = MaskEncoder()
        self.decoder_half = MaskDecoder()
        self.codebook = nn.Parameter(torch.randn(NUM_CODES, CODE_DIM) * 0.1)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops [N, 64, 64] in [0, 1] → (decoder logits [N, 64, 64], codes [N, 16], codebook + commitment loss)."""
        vectors = self.encoder_half(2.0 * (crops - 0.5)).reshape(-1, CODE_DIM)
        codes = nearest_codes(vectors.detach(), self.codebook.detach())
        chosen = self.codebook[codes]
        vq_loss = F.mse_loss(chosen, vectors.detach()) + COMMITMENT * F.mse_loss(vectors, chosen.detach())
        snapped = vectors + (chosen - vectors).detach()  # straight-through
        grid = snapped.reshape(-1, GRID, GRID, CODE_DIM).permute(0, 3, 1, 2)
        logits = self.decoder_half.decoder(grid).squeeze(1)
        return logits, codes.reshape(-1, GRID * GRID), vq_loss

    def state_in_file_layout(self) -> dict[str, torch.Tensor]:
        """The weights under ``vae-oid.npz``'s key names."""
        state = {"_vq_vae._embedding": self.codebook.detach()}
        for prefix, half in (("encoder", self.encoder_half.encoder), ("decoder", self.decoder_half.decoder)):
            state.update({f"{prefix}.{name}": value.detach() for name, value in half.state_dict().items()})
        return state


def save_mask_vae(
    vae: MaskVae,
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the VQ-VAE as safetensors in ``vae-oid.npz``'s layout (written whole, then moved into place).

    ``dtype=torch.float16`` halves the file (the bundled one); loading reads it back as float32.
    """
    from safetensors.torch import save_file

    state = {key: value.to(dtype).contiguous().cpu() for key, value in vae.state_in_file_layout().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(state, partial, metadata={"format": "pt", **(metadata or {})})
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def train_mask_vae(
    sample_crops: Callable[[random.Random, int], torch.Tensor],
    *,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> MaskVae:
    """Train a `MaskVae` on batches of 64x64 crops in [0, 1] drawn by ``sample_crops(rng, batch_size)``.

    Repeats exactly from ``seed`` (on one thread: ``OMP_NUM_THREADS=1``).
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vae = MaskVae()
    optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    with torch.no_grad():  # start the codebook from encoder outputs of real crops
        vectors = vae.encoder_half(2.0 * (sample_crops(rng, max(batch_size, 16)) - 0.5)).reshape(-1, CODE_DIM)
        picks = torch.randint(len(vectors), (NUM_CODES,), generator=torch.Generator().manual_seed(seed))
        vae.codebook.copy_(vectors[picks])
    bar = progress_bar(range(steps), desc="mask VQ-VAE", unit="step")
    for step in bar:
        crops = sample_crops(rng, batch_size)
        logits, codes, vq_loss = vae(crops)
        reconstruction = F.binary_cross_entropy_with_logits(logits, crops)
        loss = reconstruction + vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # rows no cell chose move onto random cells' outputs
            unused = torch.ones(NUM_CODES, dtype=torch.bool)
            unused[codes.reshape(-1)] = False
            if unused.any() and step < steps * 3 // 4:
                vectors = vae.encoder_half(2.0 * (crops - 0.5)).reshape(-1, CODE_DIM)
                picks = torch.randint(len(vectors), (int(unused.sum()),))
                vae.codebook[unused] = vectors[picks]
        if step % 50 == 0:
            bar.set_postfix(bce=f"{reconstruction.item():.4f}", codes=int((~unused).sum()))
    return vae.eval()
