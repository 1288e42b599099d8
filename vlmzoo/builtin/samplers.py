"""Built-in samplers, registered by key: greedy, sample, temperature, top_k, top_p, min_p, repetition_penalty,
closed_set (constrained decoding for closed-set detection and segmentation)."""

from vlmzoo.generation.constrained import ClosedSetSampler
from vlmzoo.generation.samplers import Greedy, MinP, RepetitionPenalty, Sampler, Temperature, TopK, TopP
from vlmzoo.hookspecs import hookimpl


@hookimpl
def register_samplers(registry):
    registry.sampler.register("greedy", Greedy)
    registry.sampler.register("sample", Sampler)
    registry.sampler.register("temperature", Temperature)
    registry.sampler.register("top_k", TopK)
    registry.sampler.register("top_p", TopP)
    registry.sampler.register("min_p", MinP)
    registry.sampler.register("repetition_penalty", RepetitionPenalty)
    registry.sampler.register("closed_set", ClosedSetSampler)
