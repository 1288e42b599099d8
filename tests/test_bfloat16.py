"""Half precision: the float kernels against F.linear at the row thresholds to one unit in the last place,
and bfloat16 logits against transformers' bfloat16 logits on the same checkpoint, with every kernel.

Each kernel is forced with `use_linear_kernel`, so every path runs on every host, whichever the machine
would choose (on a CPU with native bfloat16 units the float32-upcast kernel is otherwise never used).
``test_linear_kernels.py`` checks every kernel and format (quantized ones too) at a tolerance relative to
the largest output; here float kernels must match element by element to rounding, which catches errors
of a unit or two in the last place (a bias added after rounding, say) that such a tolerance lets pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers  # noqa: F401  (the reference oracle must be importable: a failure, never a skip)
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, max_abs_diff, save_hf_checkpoint

import vlmzoo
from vlmzoo.components.linear import BUILTIN_KERNELS, FLOAT_FORMATS, linear, use_linear_kernel

#: Row counts around the kernels' row ranges (1 row: a decode step; up to 32: a few; 33 and up: a prefill).
ROW_THRESHOLDS = (0, 1, 32, 33)
#: Taller than the slice in which the upcast kernel converts a half-precision weight (16384 rows).
TALL_WEIGHT_ROWS = 16384 + 5
#: One unit in the last place, relative: a kernel may differ from the float64 product by rounding only.
ULP = {torch.float32: 1e-5, torch.bfloat16: 2**-8, torch.float16: 2**-11}
DTYPES = {fmt: dtype for dtype, fmt in FLOAT_FORMATS.items()}
#: The kernels that may run a half-precision prefill: the half kernel itself, and float32 on copies.
HALF_PREFILL_KERNELS = [name for name, k in BUILTIN_KERNELS.items() if k.supports("cpu", "bfloat16", 33)]
#: Every registered kernel that takes bfloat16 weights (a plugin's too).
BF16_KERNELS = sorted(
    entry.key for entry in vlmzoo.get_registries().linear_kernel.entries() if "bfloat16" in entry.value.formats
)


def reference(x, weight, bias):
    """F.linear in float64, rounded to the input's dtype: what any correct kernel returns, up to rounding."""
    return F.linear(x.double(), weight.double(), None if bias is None else bias.double()).to(x.dtype)


def _cases():
    for name, kernel in BUILTIN_KERNELS.items():
        for fmt in kernel.formats:
            for rows in ROW_THRESHOLDS:
                if fmt in DTYPES and kernel.supports("cpu", fmt, rows):
                    yield pytest.param(name, DTYPES[fmt], rows, id=f"{name}-{fmt}-{rows}")


@pytest.mark.parametrize(("kernel", "dtype", "rows"), list(_cases()))
@pytest.mark.parametrize("with_bias", [True, False])
def test_every_kernel_equals_f_linear_at_the_row_thresholds(kernel, dtype, rows, with_bias):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(1, rows, 48, generator=generator).to(dtype)
    weight = torch.randn(40, 48, generator=generator).to(dtype)
    bias = torch.randn(40, generator=generator).to(dtype) if with_bias else None
    with use_linear_kernel(kernel):
        out = linear(x, weight, bias)
    assert out.shape == (1, rows, 40) and out.dtype == dtype
    torch.testing.assert_close(out, reference(x, weight, bias), rtol=ULP[dtype], atol=ULP[dtype] * 8)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=2 * ULP[dtype], atol=ULP[dtype] * 16)


def test_the_dtypes_and_thresholds_are_all_covered():
    covered = {(p.values[1], p.values[2]) for p in _cases()}
    assert covered == {(dtype, rows) for dtype in DTYPES.values() for rows in ROW_THRESHOLDS}
    assert "upcast_float32" in HALF_PREFILL_KERNELS and len(HALF_PREFILL_KERNELS) >= 2


@pytest.mark.parametrize("kernel", HALF_PREFILL_KERNELS)
def test_tall_half_weights(kernel):
    """An output head taller than the upcast slice (the upcast kernel converts it a slice at a time)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROW_THRESHOLDS[-1], 8, generator=generator).to(torch.bfloat16)
    weight = torch.randn(TALL_WEIGHT_ROWS, 8, generator=generator).to(torch.bfloat16)
    bias = torch.randn(TALL_WEIGHT_ROWS, generator=generator).to(torch.bfloat16)
    with use_linear_kernel(kernel):
        out = linear(x, weight, bias)
    torch.testing.assert_close(out, reference(x, weight, bias), rtol=ULP[torch.bfloat16], atol=2**-5)


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    hf = make_hf_model("gemma2", num_layers=3, num_kv_heads=2, sliding_window=5, attn_logit_softcapping=2.0,
                       final_logit_softcapping=3.0, seed=21)  # fmt: skip
    return save_hf_checkpoint(hf, tmp_path_factory.mktemp("bf16"), bf16=True)


@pytest.mark.parametrize("kernel", BF16_KERNELS)
def test_bfloat16_logits_match_transformers_bfloat16(bf16_checkpoint, kernel):
    """Same bfloat16 weights, both libraries computing in bfloat16.

    The two differ only in rounding order, so the stated tolerance is relative to how far transformers'
    own bfloat16 logits are from float32 logits of the same weights (its rounding error ``e``): vlmzoo's
    bfloat16 logits must be within ``2 e`` of transformers' and no further than ``1.5 e`` from float32.
    """
    inputs = make_inputs(vlmzoo.from_pretrained(bf16_checkpoint, progress=False).config, 3, seed=1)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        exact = load_hf_model(bf16_checkpoint, dtype=torch.float32)(**inputs).logits
        theirs = load_hf_model(bf16_checkpoint, dtype=torch.bfloat16)(**inputs).logits
        ours_model = vlmzoo.from_pretrained(bf16_checkpoint, dtype=torch.bfloat16, progress=False)
        with use_linear_kernel(kernel):
            ours = ours_model(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    rounding = max_abs_diff(theirs, exact, mask)
    assert 0 < rounding < 0.1 * float(exact[mask.bool()].abs().max())
    assert max_abs_diff(ours, theirs, mask) <= 2 * rounding
    assert max_abs_diff(ours, exact, mask) <= 1.5 * rounding
