"""Generation: a static KV cache, samplers from the registry, streaming and batched decoding."""

from vlmzoo.generation.cache import KVCache
from vlmzoo.generation.engine import GenerationStep, generate, stream
from vlmzoo.generation.samplers import (
    Chain,
    Greedy,
    MinP,
    RepetitionPenalty,
    Sampler,
    Temperature,
    TopK,
    TopP,
    make_sampler,
)

__all__ = [
    "Chain",
    "GenerationStep",
    "Greedy",
    "KVCache",
    "MinP",
    "RepetitionPenalty",
    "Sampler",
    "Temperature",
    "TopK",
    "TopP",
    "generate",
    "make_sampler",
    "stream",
]
