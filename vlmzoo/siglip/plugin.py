"""The built-in plugin that adds the SigLIP family to the zoo, through the hooks any package can implement."""

from __future__ import annotations

from vlmzoo.families import ModelFamily
from vlmzoo.hookspecs import hookimpl
from vlmzoo.siglip.checkpoints import config_from_hf, reads_config, to_model_key
from vlmzoo.siglip.config import SiglipConfig
from vlmzoo.siglip.model import AttentionPoolingHead, SiglipModel
from vlmzoo.siglip.processor import load_siglip_processor
from vlmzoo.siglip.tasks import Classify
from vlmzoo.siglip.variants import variants


def _pipeline(model, processor):
    from vlmzoo.siglip.pipeline import ImageTextModel

    return ImageTextModel(model, processor)


def _train(config, **objects):
    from vlmzoo.siglip.training import train_pairs

    return train_pairs(config, **objects)


SIGLIP_FAMILY = ModelFamily(
    name="siglip",
    config_type=SiglipConfig,
    model=SiglipModel,
    reads=reads_config,
    config_from_json=config_from_hf,
    checkpoint_key=to_model_key,
    load_processor=load_siglip_processor,
    pipeline=_pipeline,
    train=_train,
)


@hookimpl
def register_components(registry):
    registry.pooling.register("attention_probe", AttentionPoolingHead)
    registry.model_family.register("siglip", SIGLIP_FAMILY)


@hookimpl
def register_postprocessors(registry):
    registry.postprocessor.register(Classify.name, Classify)


@hookimpl
def register_variants(registry):
    for variant in variants():
        registry.variant.register(variant.name, variant)
