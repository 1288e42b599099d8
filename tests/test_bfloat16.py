"""Half precision: the `linear` kernel choice against F.linear, and bfloat16 logits against transformers'.

`linear` takes different paths by row count and dtype, and (for bfloat16 / float16 prefills) by whether the
CPU has native half-precision matrix units. Both answers of that probe are forced here, so every path runs
on every host.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers  # noqa: F401  (the reference oracle must be importable: a failure, never a skip)
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, max_abs_diff, save_hf_checkpoint

import vlmzoo
from vlmzoo.components import linear as linear_module
from vlmzoo.components.linear import linear

#: Row counts around the kernel choice's threshold (32 rows: decode-sized vs prefill-sized products).
ROW_THRESHOLDS = (0, 1, 32, 33)
#: Taller than the slice in which a half-precision weight is upcast (16384 rows).
TALL_WEIGHT_ROWS = 16384 + 5

#: One unit in the last place, relative: the kernels differ from the float32 reference by rounding only.
ULP = {torch.float32: 1e-5, torch.bfloat16: 2**-8, torch.float16: 2**-11}


@pytest.fixture(params=[True, False], ids=["native-half", "emulated-half"])
def fast_half(request, monkeypatch):
    """Force every path `linear` may take: the CPU probe says native half precision (the half kernel runs)
    or emulated (prefill-sized half products are upcast to float32). The one place that knows how."""
    monkeypatch.setattr(linear_module, "_cpu_has_fast_half", lambda: request.param)
    return request.param


def reference(x, weight, bias):
    """F.linear in float64, rounded to the input's dtype: what any correct kernel returns, up to rounding."""
    return F.linear(x.double(), weight.double(), None if bias is None else bias.double()).to(x.dtype)


@pytest.mark.parametrize("rows", ROW_THRESHOLDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_at_the_row_thresholds(fast_half, rows, dtype, with_bias):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(1, rows, 48, generator=generator).to(dtype)
    weight = torch.randn(40, 48, generator=generator).to(dtype)
    bias = torch.randn(40, generator=generator).to(dtype) if with_bias else None
    out = linear(x, weight, bias)
    assert out.shape == (1, rows, 40) and out.dtype == dtype
    torch.testing.assert_close(out, reference(x, weight, bias), rtol=ULP[dtype], atol=ULP[dtype] * 8)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=2 * ULP[dtype], atol=ULP[dtype] * 16)


def test_large_half_weights_are_upcast_in_slices(fast_half):
    """An output head taller than the upcast slice goes through the sliced upcast (when emulated)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROW_THRESHOLDS[-1], 8, generator=generator).to(torch.bfloat16)
    weight = torch.randn(TALL_WEIGHT_ROWS, 8, generator=generator).to(torch.bfloat16)
    bias = torch.randn(TALL_WEIGHT_ROWS, generator=generator).to(torch.bfloat16)
    out = linear(x, weight, bias)
    torch.testing.assert_close(out, reference(x, weight, bias), rtol=ULP[torch.bfloat16], atol=2**-5)


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    hf = make_hf_model("gemma2", num_layers=3, num_kv_heads=2, sliding_window=5, attn_logit_softcapping=2.0,
                       final_logit_softcapping=3.0, seed=21)  # fmt: skip
    return save_hf_checkpoint(hf, tmp_path_factory.mktemp("bf16"), bf16=True)


def test_bfloat16_logits_match_transformers_bfloat16(bf16_checkpoint, fast_half):
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
        ours = ours_model(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    rounding = max_abs_diff(theirs, exact, mask)
    assert 0 < rounding < 0.1 * float(exact[mask.bool()].abs().max())
    assert max_abs_diff(ours, theirs, mask) <= 2 * rounding
    assert max_abs_diff(ours, exact, mask) <= 1.5 * rounding
