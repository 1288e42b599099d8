"""The extension's fused decode attention against attention spelled out in float64, and when it is used."""

from __future__ import annotations

import pytest
import torch

from vlmzoo.components import EagerAttention, SdpaAttention, cpu_kernels

#: (batch, heads, kv heads, head dim, keys): grouped, multi-query and multi-head; head dims that are
#: not multiples of 16 or 8, and a single key.
SHAPES = [(1, 8, 4, 256, 283), (2, 8, 1, 64, 100), (3, 6, 3, 20, 17), (2, 4, 4, 72, 9), (1, 2, 2, 13, 1)]


def _inputs(shape, dtype, seed, spread=1.0):
    batch, heads, kv_heads, dim, keys = shape
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(batch, heads, 1, dim, generator=g) * spread).to(dtype)
    k = torch.randn(batch, kv_heads, keys, dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, keys, dim, generator=g).to(dtype)
    mask = torch.rand(batch, 1, 1, keys, generator=g) > 0.3
    mask[..., -1] = True  # the step's own key is always visible
    return q, k, v, mask


def _float64(q, k, v, mask, softcap):
    heads, kv_heads, dim = q.shape[1], k.shape[1], q.shape[-1]
    attention = EagerAttention(8, heads, kv_heads, dim, softcap=softcap)
    return attention.attend(q.double(), k.double(), v.double(), mask), attention.scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 50.0, 3.0])
def test_fused_decode_attention_matches_float64(dtype, softcap):
    for seed, shape in enumerate(SHAPES):
        # spread 8: scores of tens, so a soft-cap of 3 takes tanh far from zero (both of its formulas)
        for spread in (1.0, 8.0):
            q, k, v, mask = _inputs(shape, dtype, seed, spread)
            expected, scale = _float64(q, k, v, mask, softcap)
            got = cpu_kernels.decode_attention(q, k, v, mask, scale, softcap)
            assert got is not None and got.dtype == dtype and got.shape == q.shape
            # float32 throughout: float32 rounding; bfloat16 adds one rounding of the output
            tolerance = 2e-6 if dtype == torch.float32 else 2**-8
            error = (got.double() - expected).abs().max() / expected.abs().max()
            assert error <= tolerance, f"{shape} spread {spread}: {error:.2e}"


def test_masked_keys_take_no_part():
    q, k, v, mask = _inputs((2, 4, 2, 32, 40), torch.float32, 0)
    out = cpu_kernels.decode_attention(q, k, v, mask, 0.2, 50.0)
    noisy_k, noisy_v = k.clone(), v.clone()
    hidden = ~mask[:, 0, 0]
    noisy_k[hidden.unsqueeze(1).expand_as(k[..., 0])] = 1e4
    noisy_v[hidden.unsqueeze(1).expand_as(v[..., 0])] = float("nan")
    assert torch.equal(cpu_kernels.decode_attention(q, noisy_k, noisy_v, mask, 0.2, 50.0), out)


def test_sdpa_attention_takes_the_fused_kernel_when_decoding_on_cpu(monkeypatch):
    calls = []
    original = cpu_kernels.decode_attention

    def counting(*args):
        out = original(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cpu_kernels, "decode_attention", counting)
    for softcap in (None, 50.0):
        q, k, v, mask = _inputs((2, 8, 2, 32, 30), torch.float32, 1)
        expected, _ = _float64(q, k, v, mask, softcap)
        sdpa = SdpaAttention(8, 8, 2, 32, softcap=softcap)
        with torch.inference_mode():
            got = sdpa.attend(q, k, v, mask)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
        EagerAttention(8, 8, 2, 32, softcap=softcap).attend(q, k, v, mask)  # the reference path stays explicit
    assert calls == [True, True]


def test_fused_kernel_declines_what_it_cannot_do(fresh_extension):
    q, k, v, mask = _inputs((1, 4, 2, 16, 10), torch.float32, 2)
    assert cpu_kernels.decode_attention(q.expand(1, 4, 2, 16), k, v, None, 0.25, None) is None  # two queries
    assert cpu_kernels.decode_attention(q, k.half(), v.half(), mask, 0.25, None) is None  # float16 cache
    assert cpu_kernels.decode_attention(q, k.transpose(-1, -2).contiguous().transpose(-1, -2), v, mask, 0.25, None) is None
    with torch.enable_grad():  # no backward: training keeps the explicit form
        assert cpu_kernels.decode_attention(q.requires_grad_(), k, v, mask, 0.25, None) is None
    fresh_extension.setenv("VLMZOO_CPU_KERNELS", "0")
    assert cpu_kernels.decode_attention(q.detach(), k, v, mask, 0.25, None) is None


@pytest.fixture
def fresh_extension(monkeypatch):
    cpu_kernels.load_extension.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    cpu_kernels.load_extension.cache_clear()
