"""bfloat16 logits against transformers' bfloat16 on the same checkpoint, with every bfloat16 kernel.

Which kernel computes a bfloat16 product depends on the machine (native half-precision units or not,
see `vlmzoo.components.linear`); each is forced here in turn, so every path runs on every host. The
kernels themselves are checked against F.linear at the row thresholds in ``test_linear_kernels.py``.
"""

from __future__ import annotations

import pytest
import torch
import transformers  # noqa: F401  (the reference oracle must be importable: a failure, never a skip)
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, max_abs_diff, save_hf_checkpoint

import vlmzoo
from vlmzoo.components.linear import use_linear_kernel

BF16_KERNELS = sorted(
    entry.key for entry in vlmzoo.get_registries().linear_kernel.entries() if "bfloat16" in entry.value.formats
)


@pytest.fixture(params=BF16_KERNELS)
def bf16_kernel(request):
    """Force one bfloat16-capable kernel for every product it supports."""
    with use_linear_kernel(request.param):
        yield request.param


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    hf = make_hf_model("gemma2", num_layers=3, num_kv_heads=2, sliding_window=5, attn_logit_softcapping=2.0,
                       final_logit_softcapping=3.0, seed=21)  # fmt: skip
    return save_hf_checkpoint(hf, tmp_path_factory.mktemp("bf16"), bf16=True)


def test_bfloat16_logits_match_transformers_bfloat16(bf16_checkpoint, bf16_kernel):
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
