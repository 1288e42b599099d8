"""FSDP2 (``fully_shard``): parameters, gradients and optimizer state split over the processes.

For models that do not fit one device: each vision and decoder layer is its own shard group (its
weights are gathered just before it runs and freed after), and the rest (embeddings, projector, final
norms) forms the root group. Gradients are reduce-scattered, so each process keeps and updates only
its slice of the optimizer state.
"""

from __future__ import annotations

from torch import nn

from vlmzoo.training.distributed import ProcessGroup


def shard_model(loss_module: nn.Module, group: ProcessGroup) -> nn.Module:
    """Apply ``fully_shard`` to every transformer layer, then to the whole `SuffixLoss` module, in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(group.device.type, (group.world_size,))
    model = loss_module.model
    for layer in [*model.vision_tower.layers, *model.language_model.layers]:
        fully_shard(layer, mesh=mesh)
    fully_shard(loss_module, mesh=mesh)
    return loss_module
