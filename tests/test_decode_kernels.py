"""The extension's decode-step kernels (attention, RMSNorm, soft-cap, argmax) against float64, and their use."""

from __future__ import annotations

import pytest
import torch

from vlmzoo.components import EagerAttention, GemmaRMSNorm, SdpaAttention, cpu_kernels
from vlmzoo.generation.samplers import Greedy

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
    strided = k.transpose(-1, -2).contiguous().transpose(-1, -2)  # rows not contiguous
    assert cpu_kernels.decode_attention(q, strided, v, mask, 0.25, None) is None
    with torch.enable_grad():  # no backward: training keeps the explicit form
        assert cpu_kernels.decode_attention(q.requires_grad_(), k, v, mask, 0.25, None) is None
    with torch.enable_grad():
        assert cpu_kernels.rms_norm(k.requires_grad_(), torch.ones(16), 1e-6) is None
    fresh_extension.setenv("VLMZOO_CPU_KERNELS", "0")
    q, k = q.detach(), k.detach()
    assert cpu_kernels.decode_attention(q, k, v, mask, 0.25, None) is None
    assert cpu_kernels.rms_norm(q, torch.ones(16), 1e-6) is None
    assert cpu_kernels.softcap(q, 30.0) is None and cpu_kernels.argmax(q[0, :, 0]) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_float64(dtype):
    for seed, shape in enumerate([(1, 1, 2304), (3, 5, 2305), (2, 7), (4, 1)]):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(*shape, generator=g) * 3).to(dtype)
        weight = torch.randn(shape[-1], generator=g).to(dtype)
        x64 = x.double()
        expected = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + weight.double())
        got = cpu_kernels.rms_norm(x, weight, 1e-6)
        assert got.dtype == dtype and got.shape == x.shape
        tolerance = 1e-6 if dtype == torch.float32 else 2**-8  # float32 rounding; one rounding to bfloat16
        assert (got.double() - expected).abs().max() <= tolerance * expected.abs().max(), shape


def test_gemma_rms_norm_takes_the_kernel_without_autograd_only():
    norm = GemmaRMSNorm(33)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 3, 33)
    with torch.inference_mode():
        fused = norm(x)
    with torch.no_grad():
        torch.testing.assert_close(fused, cpu_kernels.rms_norm(x, norm.weight, norm.eps), rtol=0, atol=0)
    trained = norm(x)  # weight requires grad: PyTorch's operators, so a backward exists
    assert trained.grad_fn is not None
    torch.testing.assert_close(trained.detach(), fused, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softcap_matches_float64(dtype):
    g = torch.Generator().manual_seed(3)
    for spread in (0.1, 1.0, 30.0, 1000.0):  # tanh near zero (its series) and far from it (its exponential)
        x = (torch.randn(3, 1001, generator=g) * spread).to(dtype)
        expected = torch.tanh(x.double() / 30) * 30
        got = cpu_kernels.softcap(x, 30.0)
        assert got.dtype == dtype and got.shape == x.shape
        relative = (got.double() - expected).abs() / expected.abs().clamp_min(1e-30)
        assert relative.max() <= (4e-7 if dtype == torch.float32 else 2**-8), spread


def test_argmax_matches_pytorch_and_leaves_nan_to_it():
    g = torch.Generator().manual_seed(4)
    for rows, width in [(1, 257216), (3, 1001), (2, 7), (5, 1)]:
        logits = torch.randn(rows, width, generator=g)
        assert torch.equal(cpu_kernels.argmax(logits), logits.argmax(-1))
    ties = torch.zeros(2, 40)
    ties[0, [3, 17, 39]] = 2.0
    ties[1, [38, 39]] = 1.0
    assert cpu_kernels.argmax(ties).tolist() == [3, 38] == ties.argmax(-1).tolist()
    ties[1, 5] = float("nan")
    assert cpu_kernels.argmax(ties) is None  # PyTorch's argmax picks the NaN
    assert torch.equal(Greedy()(ties, torch.zeros(2, 0, dtype=torch.long)), ties.argmax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_mul_matches_float64(dtype):
    g = torch.Generator().manual_seed(5)
    for shape in [(1, 1, 9216), (3, 1001), (2, 7)]:
        gate = (torch.randn(*shape, generator=g) * 4).to(dtype)  # far enough out for both formulas of tanh
        up = torch.randn(*shape, generator=g).to(dtype)
        expected = torch.nn.functional.gelu(gate.double(), approximate="tanh") * up.double()
        got = cpu_kernels.gelu_mul(gate, up)
        assert got.dtype == dtype and got.shape == gate.shape
        tolerance = 1e-6 if dtype == torch.float32 else 2**-8
        assert (got.double() - expected).abs().max() <= tolerance * expected.abs().max(), shape


def test_gated_mlp_takes_the_kernel_without_autograd_only(monkeypatch):
    from vlmzoo.components import GatedGeluMLP

    mlp = GatedGeluMLP(16, 40)
    x = torch.randn(2, 3, 16)
    calls = []
    original = cpu_kernels.gelu_mul
    monkeypatch.setattr(cpu_kernels, "gelu_mul", lambda *a: calls.append(original(*a)) or calls[-1])
    with torch.inference_mode():
        fused = mlp(x)
    trained = mlp(x)
    assert trained.grad_fn is not None and calls[0] is not None and calls[1] is None
    torch.testing.assert_close(trained.detach(), fused, rtol=1e-5, atol=1e-6)


def test_nan_stays_nan():
    # generation stops on non-finite logits: a kernel that turned NaN into a number would hide a broken model
    nan = torch.tensor([[1.0, float("nan"), -2.0, 0.5, 3.0, float("nan"), 0.0, 1.0, 2.0]])
    assert torch.isnan(cpu_kernels.softcap(nan, 30.0)).tolist() == torch.isnan(nan).tolist()
    assert torch.isnan(cpu_kernels.gelu_mul(nan, torch.ones_like(nan))).tolist() == torch.isnan(nan).tolist()
    assert torch.isnan(cpu_kernels.rms_norm(nan, torch.zeros(9), 1e-6)).all()
    q, k, v, mask = _inputs((1, 2, 1, 16, 5), torch.float32, 6)
    k[0, 0, 2, 3] = float("nan")
    assert torch.isnan(cpu_kernels.decode_attention(q, k, v, None, 0.25, 50.0)).all()
