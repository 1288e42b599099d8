"""Weight-only quantization: schemes, their kernels, and the modules that hold quantized weights.

A decode step reads every weight once, so its speed is bounded by weight bytes ÷ memory bandwidth:
int8 weights halve the bytes of bfloat16 and int4 quarter them. Activations stay in floating point
(the products run in bfloat16, accumulating in float32), so only the weights lose precision.

Two schemes are built in, each a `QuantizationScheme` in the ``quantization`` registry:

* ``int8``: symmetric, one scale per output row (per channel), run by PyTorch's
  ``_weight_int8pack_mm`` (CPU and CUDA) or by dequantizing slices for large row counts;
* ``int4``: asymmetric in groups of 128 (or 64) inputs with a scale and zero point per group, packed in
  tiles of four rows for the CPU kernels of `vlmzoo.components.cpu_kernels` (CPU only).

The int8 kernels here are PyTorch's own operators, the ones torchao's weight-only configs reach on
CPUs after ``torch.compile``; `vlmzoo.components.cpu_kernels` adds faster ones for both schemes. The
int4 layout is vlmzoo's own (PyTorch's int4 packing depends on the CPU it was made on and cannot be read
back), so its fallback here dequantizes slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.components.linear import LinearKernel, linear

#: Rows quantized at a time, so a float32 copy of a whole large weight is never made.
CHUNK_ROWS = 16384
INT4_GROUP_SIZE = 128
#: Rows of an int4 tile: the rows one kernel pass streams together (one activation load feeds them all).
INT4_TILE_ROWS = 4
#: Bytes of float weight `int8_dequantized` makes at a time (small enough for the allocator to reuse).
DEQUANTIZE_BYTES = 8 * 2**20


@dataclass(frozen=True)
class QuantizationScheme:
    """How to store a weight [out, in] in fewer bits, and how to get a float weight back.

    ``quantize(weight)`` returns ``(qweight, scales)`` on the weight's device; ``dequantize(qweight,
    scales, dtype)`` returns the float weight [out, in]; ``packed_shapes(out, in)`` gives the shapes and
    dtypes of ``(qweight, scales)`` without computing them (for building on the meta device);
    ``accepts(out, in)`` says whether a weight of that shape can be stored; ``devices`` lists the device
    types with a kernel. The scheme's registry key is also the weight format its kernels handle.
    ``rows_independent`` says that quantizing a slice of rows gives exactly those rows of ``qweight``
    and ``scales`` (first dimension), so a loader may quantize a large weight a block of rows at a time
    and never hold it whole in floating point.
    """

    quantize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    dequantize: Callable[[torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor]
    packed_shapes: Callable[[int, int], tuple[tuple[tuple[int, ...], torch.dtype], tuple[tuple[int, ...], torch.dtype]]]
    accepts: Callable[[int, int], bool]
    devices: tuple[str, ...]
    bits: int
    description: str = ""
    rows_independent: bool = False


# ---- int8, one scale per output row --------------------------------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with a scale per row: ``weight ≈ qweight * scales[:, None]``.

    The scales are bfloat16, the dtype the int8 kernel takes, and the integers are computed against
    the rounded scale (nudged up so the largest weight still fits), so storing them costs no accuracy.
    """
    qweight = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.bfloat16, device=weight.device)
    for i in range(0, weight.shape[0], CHUNK_ROWS):
        chunk = weight[i : i + CHUNK_ROWS].float()
        scale = (chunk.abs().amax(dim=1) / 127 * (1 + 2**-8)).clamp(min=1e-30).to(torch.bfloat16)
        qweight[i : i + CHUNK_ROWS] = (chunk / scale.float()[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        scales[i : i + CHUNK_ROWS] = scale
    return qweight, scales


def dequantize_int8(qweight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (qweight.float() * scales.float()[:, None]).to(dtype)


def int8pack_handles(out_features: int, in_features: int) -> bool:
    """Whether PyTorch's ``_weight_int8pack_mm`` runs this shape: on CPUs it crashes the process
    (segmentation fault, PyTorch 2.13) when the inputs are not a multiple of 16 (e.g. a 40x70 weight);
    a multiple of 32 is what every tested shape had."""
    return in_features % 32 == 0


def int8_weight_only(x, qweight, bias=None, scales=None):
    """PyTorch's int8 weight-only product; activations run in bfloat16. Shapes that PyTorch's kernel
    crashes on (see `int8pack_handles`) go to `int8_dequantized` instead."""
    if x.device.type == "cpu" and not int8pack_handles(*qweight.shape):
        return int8_dequantized(x, qweight, bias, scales)
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
    if scales.dtype != torch.bfloat16:  # after a model.to(dtype); stored scales are bfloat16 already
        scales = scales.to(torch.bfloat16)
    out = torch.ops.aten._weight_int8pack_mm(flat, qweight, scales).to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], qweight.shape[0])


def int8_dequantized(x, qweight, bias=None, scales=None):
    """Dequantize a few megabytes of rows at a time (int8 times the scale, in ``x``'s dtype) and run the
    float product: prefill-sized products then use the fast float kernels (AMX, for one).

    The slices are kept small (`DEQUANTIZE_BYTES`) on purpose: the allocator hands the same memory back
    for each, while a fresh buffer of tens of megabytes costs a page fault per 4 KiB, which took four
    times as long as the arithmetic in measurements.
    """
    step = max(1, DEQUANTIZE_BYTES // (qweight.shape[1] * x.element_size()))
    pieces = [
        F.linear(
            x,
            qweight[i : i + step].to(x.dtype).mul_(scales[i : i + step, None].to(x.dtype)),
            None if bias is None else bias[i : i + step],
        )
        for i in range(0, qweight.shape[0], step)
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


INT8 = QuantizationScheme(
    quantize=quantize_int8,
    dequantize=dequantize_int8,
    packed_shapes=lambda out, inp: (((out, inp), torch.int8), ((out,), torch.bfloat16)),
    accepts=lambda out, inp: True,
    devices=("*",),
    bits=8,
    description="int8 weights, one scale per output row",
    rows_independent=True,
)


# ---- int4, groups of 128 inputs, tiles of four rows -----------------------------------------------------


def _int4_group_size(in_features: int) -> int | None:
    for size in (INT4_GROUP_SIZE, 64):
        if in_features % size == 0:
            return size
    return None


def int4_accepts(out_features: int, in_features: int) -> bool:
    return out_features % INT4_TILE_ROWS == 0 and _int4_group_size(in_features) is not None


#: Rounds of `quantize_int4`'s least-squares refit of each group's scale and zero point.
INT4_FIT_ROUNDS = 2


def _fit_int4_groups(grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes 0..15, scale and offset per group (``w ≈ q * scale + offset``, float32), from min-max levels
    refined by alternating least squares: the scale and offset that fit the codes best, then the nearest
    codes for them. Each round can only lower the group's squared error; min-max alone spends levels on
    the extremes of a group and rounds the many small weights coarsely (the weights of a small model's
    rows lost a tenth to a fifth of their error this way, and its int4 segmentation most of its loss)."""
    offset = grouped.amin(dim=-1, keepdim=True)
    scale = ((grouped.amax(dim=-1, keepdim=True) - offset) / 15).clamp_(min=1e-6)
    count, total = grouped.shape[-1], grouped.sum(dim=-1, keepdim=True)
    for _ in range(INT4_FIT_ROUNDS):
        q = (grouped - offset).mul_(1 / scale).round_().clamp_(0, 15)
        q_sum = q.sum(dim=-1, keepdim=True)
        q_square = torch.linalg.vecdot(q, q).unsqueeze(-1)
        determinant = count * q_square - q_sum * q_sum
        fitted = (count * torch.linalg.vecdot(q, grouped).unsqueeze(-1) - q_sum * total) / determinant.clamp(min=1)
        keep = (determinant > 0) & (fitted > 1e-6)  # one code in use (a constant group): keep min-max
        scale = torch.where(keep, fitted, scale)
        offset = torch.where(keep, (total - scale * q_sum) / count, offset)
    # the levels as stored (bfloat16 scale and zero point), and each weight's nearest one
    scale = scale.to(torch.bfloat16).float()
    zero = (offset + 8 * scale).to(torch.bfloat16).float()
    q = (grouped - zero).mul_(1 / scale).add_(8).round_().clamp_(0, 15)
    return q, scale, zero


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of 128 (or 64) inputs: ``w ≈ (q - 8) * scale + zero`` with q in 0..15,
    the levels fitted to each group by least squares (`_fit_int4_groups`).

    Returns the packed weight, uint8 [out, in/2] holding tiles of four rows (2·in bytes per tile: per 64
    inputs, each row's 32 bytes, byte j carrying input j in its low nibble and input 32 + j in its high
    one), and the bfloat16 ``[out, in/group, 2]`` (scale, zero point).
    """
    out_features, in_features = weight.shape
    group = _int4_group_size(in_features)
    if group is None or out_features % INT4_TILE_ROWS:
        raise ValueError(f"int4 needs out_features divisible by 4 and in_features by 64, got {list(weight.shape)}")
    q, scale, zero = _fit_int4_groups(weight.float().reshape(out_features, in_features // group, group))
    tiles = q.to(torch.uint8).reshape(out_features // INT4_TILE_ROWS, INT4_TILE_ROWS, in_features // 64, 2, 32)
    packed = (tiles[..., 0, :] | (tiles[..., 1, :] << 4)).permute(0, 2, 1, 3).contiguous()
    scales_and_zeros = torch.cat([scale, zero], dim=-1).to(torch.bfloat16)
    return packed.view(out_features, in_features // 2), scales_and_zeros


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float weight [out, in] of `quantize_int4`'s tiles (any whole number of tiles)."""
    out_features, in_features = packed.shape[0], packed.shape[1] * 2
    tiles = packed.reshape(out_features // INT4_TILE_ROWS, in_features // 64, INT4_TILE_ROWS, 1, 32)
    q = torch.cat([tiles & 15, tiles >> 4], dim=3).permute(0, 2, 1, 3, 4).reshape(out_features, scales.shape[1], -1)
    weight = (q.float() - 8) * scales[..., :1].float() + scales[..., 1:].float()
    return weight.reshape(out_features, in_features).to(dtype)


def int4_dequantized(x, packed, bias=None, scales=None):
    """Dequantize a few megabytes of rows (whole tiles) at a time and run the float product in ``x``'s
    dtype: the portable int4 kernel (any row count; slow for one row, where `vlmzoo.components.cpu_kernels`
    has a real kernel)."""
    step = max(INT4_TILE_ROWS, DEQUANTIZE_BYTES // (packed.shape[1] * 2 * 4) // INT4_TILE_ROWS * INT4_TILE_ROWS)
    pieces = [
        F.linear(
            x,
            dequantize_int4(packed[i : i + step], scales[i : i + step], x.dtype),
            None if bias is None else bias[i : i + step],
        )
        for i in range(0, packed.shape[0], step)
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def _int4_packed_shapes(out_features: int, in_features: int):
    group = _int4_group_size(in_features) or INT4_GROUP_SIZE
    return ((out_features, in_features // 2), torch.uint8), ((out_features, in_features // group, 2), torch.bfloat16)


INT4 = QuantizationScheme(
    quantize=quantize_int4,
    dequantize=dequantize_int4,
    packed_shapes=_int4_packed_shapes,
    accepts=int4_accepts,
    devices=("cpu",),
    bits=4,
    description="int4 weights in groups of 128 inputs with scales and zero points, tiles of four rows (CPU)",
)

SCHEMES = {"int8": INT8, "int4": INT4}

KERNELS = {
    "int8_weight_only": LinearKernel(
        int8_weight_only,
        ("int8",),
        devices=("cpu", "cuda"),
        max_rows=32,  # a matrix-vector kernel: several times slower than dequantizing for a prefill
        priority=1,
        description="PyTorch's int8 weight-only",
    ),
    "int8_dequantized": LinearKernel(int8_dequantized, ("int8",), description="dequantize slices, float product"),
    "int4_dequantized": LinearKernel(
        int4_dequantized, ("int4",), devices=("cpu",), description="dequantize int4 slices, float product"
    ),
}


# ---- modules ---------------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """A `Linear` whose weight is stored by a quantization scheme (buffers ``qweight`` and ``scales``).

    The bias, when there is one, stays in floating point.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: str,
        packed_shapes,
        bias: bool = False,
        *,
        device=None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        (qshape, qdtype), (sshape, sdtype) = packed_shapes
        self.register_buffer("qweight", torch.empty(qshape, dtype=qdtype, device=device))
        self.register_buffer("scales", torch.empty(sshape, dtype=sdtype, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_float(cls, module: nn.Linear, name: str, scheme: QuantizationScheme) -> QuantizedLinear:
        """Quantize ``module``'s weight with ``scheme`` (registered as ``name``)."""
        weight = module.weight.detach()
        quantized = cls(
            module.in_features,
            module.out_features,
            name,
            scheme.packed_shapes(module.out_features, module.in_features),
            bias=module.bias is not None,
            device="meta",
        )
        quantized.qweight, quantized.scales = scheme.quantize(weight)
        if module.bias is not None:
            quantized.bias = nn.Parameter(module.bias.detach(), requires_grad=False)
        return quantized

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.qweight, self.bias, self.scales, format=self.scheme)


class QuantizedEmbedding(nn.Module):
    """A token embedding stored as int8 with one scale per token, also serving as the tied output head.

    Per-row int8 of the embedding is per-output-channel int8 of the tied head, so one int8 copy serves
    both: rows are dequantized on lookup, and `project` runs the head on the int8 kernel.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype, device=None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self._dtype = dtype
        self.register_buffer("qweight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(num_embeddings, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_float(cls, module: nn.Embedding) -> QuantizedEmbedding:
        quantized = cls(module.num_embeddings, module.embedding_dim, module.weight.dtype, device="meta")
        quantized.qweight, quantized.scales = quantize_int8(module.weight.detach())
        return quantized

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the embeddings it returns (the model's activation dtype)."""
        return self._dtype

    def _apply(self, fn, recurse=True):
        # Follow casts such as model.float() the way a float weight would: apply the cast to a probe.
        self._dtype = fn(torch.empty(0, dtype=self._dtype)).dtype
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, scheme='int8', dtype={self.dtype}"

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.qweight[input_ids].float() * self.scales[input_ids].float()[..., None]
        return rows.to(self.dtype)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden @ embedding.T``: the tied output head."""
        return linear(hidden, self.qweight, None, self.scales, format="int8")

    def dequantized(self) -> torch.Tensor:
        return dequantize_int8(self.qweight, self.scales, self.dtype)


def packed_nbytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, as stored (quantized weights count their packed size)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
