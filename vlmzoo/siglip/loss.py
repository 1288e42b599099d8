"""The pairwise sigmoid loss of SigLIP (Zhai et al. 2023), whole and in chunks across processes.

For a batch of B matched (image, text) pairs with L2-normalised embeddings x_i, y_j, learned temperature
t = exp(t') and bias b, every pair is an independent binary classification::

    loss = -1/B * sum_i sum_j log sigmoid(z_ij * (t * x_i . y_j + b))
    z_ij = +1 if i == j else -1

Unlike the softmax (CLIP) loss, no term needs the whole row, so the B x B matrix never has to exist in
one place: in the chunked form each of W processes holds B/W pairs, scores its images against its own
texts (positives and negatives), then passes its texts around the ring W - 1 times, scoring its images
against each neighbour's texts (negatives only). The shares add up to the loss of the global batch, and
the text embeddings carry their gradients back around the ring, so each process's backward pass ends
with its part of the global batch's gradient; summing gradients over processes gives the whole.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["chunked_sigmoid_loss", "sigmoid_loss", "sigmoid_loss_terms"]


def sigmoid_loss_terms(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    positives: bool,
) -> torch.Tensor:
    """The summed -log sigmoid(z * logits) of one block of images against one block of texts.

    ``positives`` says the block holds the matching pairs on its diagonal (z = +1 there); otherwise every
    pair is a negative (z = -1).
    """
    logits = image_embeds @ text_embeds.T * logit_scale.exp() + logit_bias
    labels = -torch.ones_like(logits)
    if positives:
        labels = labels + 2 * torch.eye(*logits.shape, dtype=logits.dtype, device=logits.device)
    return -F.logsigmoid(labels * logits).sum()


def sigmoid_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """The sigmoid loss of a batch of matched pairs (row i of each is one pair), divided by the batch size.

    ``image_embeds`` and ``text_embeds`` [B, D] must be L2-normalised; ``logit_scale`` is t' (t = exp(t')).
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(
            f"image_embeds and text_embeds must both be [batch, dim] for matched pairs, got "
            f"{list(image_embeds.shape)} and {list(text_embeds.shape)}"
        )
    return sigmoid_loss_terms(image_embeds, text_embeds, logit_scale, logit_bias, positives=True) / len(image_embeds)


class _RingShift(torch.autograd.Function):
    """Send a tensor to the next rank and receive the previous rank's; gradients travel the other way."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return _exchange(tensor, group, step=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _exchange(grad.contiguous(), ctx.group, step=-1), None


def _exchange(tensor: torch.Tensor, group, step: int) -> torch.Tensor:
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    tensor = tensor.contiguous()
    received = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    to_rank = dist.get_global_rank(group, (rank + step) % world) if group is not None else (rank + step) % world
    from_rank = dist.get_global_rank(group, (rank - step) % world) if group is not None else (rank - step) % world
    requests = dist.batch_isend_irecv(
        [
            dist.P2POp(dist.isend, tensor.contiguous(), to_rank, group),
            dist.P2POp(dist.irecv, received, from_rank, group),
        ]
    )
    for request in requests:
        request.wait()
    return received


def chunked_sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    group=None,
) -> torch.Tensor:
    """This process's share of the sigmoid loss of the global batch (all processes' pairs together).

    Each process passes its own B/W matched pairs; the texts of the others reach it one neighbour at a
    time, so no process holds more than a B/W x B/W block of logits. The shares of all processes add up to
    `sigmoid_loss` of the concatenated batch. Outside ``torch.distributed`` (or with one process) this is
    `sigmoid_loss`. The batch must be the same size on every process.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias)
    world = dist.get_world_size(group)
    global_batch = len(image_embeds) * world
    total = sigmoid_loss_terms(image_embeds, text_embeds, logit_scale, logit_bias, positives=True)
    texts = text_embeds
    for _ in range(world - 1):
        texts = _RingShift.apply(texts, group)
        total = total + sigmoid_loss_terms(image_embeds, texts, logit_scale, logit_bias, positives=False)
    return total / global_batch
