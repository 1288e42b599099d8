"""The sigmoid loss: the paper's formula, its gradient, and the chunked form under a two-process torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from vlmzoo.siglip.loss import sigmoid_loss, sigmoid_loss_terms


def _batch(n=6, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(images + 0.5 * torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=-1)
    return images, texts


def test_loss_is_the_papers_formula_written_out():
    images, texts = _batch()
    t, b = torch.tensor([math.log(10.0)], dtype=torch.float64), torch.tensor([-10.0], dtype=torch.float64)
    expected = 0.0
    for i in range(len(images)):
        for j in range(len(texts)):
            z = 1.0 if i == j else -1.0
            logit = math.exp(t.item()) * float(images[i] @ texts[j]) + b.item()
            expected -= math.log(1.0 / (1.0 + math.exp(-z * logit)))
    assert abs(sigmoid_loss(images, texts, t, b).item() - expected / len(images)) < 1e-10


def test_gradient_matches_autograd_of_the_plain_formula():
    images, texts = _batch()
    params = [images.clone().requires_grad_(), texts.clone().requires_grad_()]
    t = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-2.0], dtype=torch.float64, requires_grad=True)
    # The plain formula, in the paper's words: every pair a binary classification.
    logits = params[0] @ params[1].T * t.exp() + b
    labels = 2 * torch.eye(len(images), dtype=torch.float64) - 1
    plain = -torch.log(torch.sigmoid(labels * logits)).sum() / len(images)
    expected = torch.autograd.grad(plain, [*params, t, b])
    got = torch.autograd.grad(sigmoid_loss(params[0], params[1], t, b), [*params, t, b])
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(lambda x, y, s, c: sigmoid_loss(x, y, s, c), (*params, t, b))


def test_chunks_add_up_to_the_whole_batch():
    """The blocks the chunked loss computes (own texts, then each neighbour's) sum to the plain loss."""
    images, texts = _batch(n=8)
    t, b = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-3.0], dtype=torch.float64)
    chunks = 4
    image_chunks, text_chunks = images.chunk(chunks), texts.chunk(chunks)
    total = 0.0
    for rank in range(chunks):
        total += sigmoid_loss_terms(image_chunks[rank], text_chunks[rank], t, b, positives=True)
        for shift in range(1, chunks):
            other = text_chunks[(rank - shift) % chunks]
            total += sigmoid_loss_terms(image_chunks[rank], other, t, b, positives=False)
    torch.testing.assert_close(total / len(images), sigmoid_loss(images, texts, t, b))


WORKER = """
import json, sys
import torch, torch.distributed as dist, torch.nn.functional as F
from vlmzoo.siglip.loss import chunked_sigmoid_loss
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
raw_images = torch.randn(8, 5, generator=generator, dtype=torch.float64)
raw_texts = torch.randn(8, 5, generator=generator, dtype=torch.float64)
images = raw_images.chunk(world)[rank].clone().requires_grad_()
texts = raw_texts.chunk(world)[rank].clone().requires_grad_()
t = torch.tensor([1.1], dtype=torch.float64, requires_grad=True)
b = torch.tensor([-2.5], dtype=torch.float64, requires_grad=True)
share = chunked_sigmoid_loss(F.normalize(images, dim=-1), F.normalize(texts, dim=-1), t, b)
share.backward()
for grad in (t.grad, b.grad):
    dist.all_reduce(grad)
loss = share.detach().clone()
dist.all_reduce(loss)
gathered = [torch.empty_like(images.grad) for _ in range(world)]
dist.all_gather(gathered, images.grad)
gathered_text = [torch.empty_like(texts.grad) for _ in range(world)]
dist.all_gather(gathered_text, texts.grad)
if rank == 0:
    print(json.dumps({"loss": loss.item(), "t": t.grad.item(), "b": b.grad.item(),
                      "images": torch.cat(gathered).tolist(), "texts": torch.cat(gathered_text).tolist()}))
dist.destroy_process_group()
"""


def test_two_process_torchrun_equals_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 5, generator=generator, dtype=torch.float64).requires_grad_()
    texts = torch.randn(8, 5, generator=generator, dtype=torch.float64).requires_grad_()
    t = torch.tensor([1.1], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-2.5], dtype=torch.float64, requires_grad=True)
    loss = sigmoid_loss(F.normalize(images, dim=-1), F.normalize(texts, dim=-1), t, b)
    loss.backward()
    assert abs(result["loss"] - loss.item()) < 1e-12
    assert abs(result["t"] - t.grad.item()) < 1e-12 and abs(result["b"] - b.grad.item()) < 1e-12
    torch.testing.assert_close(torch.tensor(result["images"], dtype=torch.float64), images.grad)
    torch.testing.assert_close(torch.tensor(result["texts"], dtype=torch.float64), texts.grad)
