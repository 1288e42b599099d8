"""Time a decode step spends around its products: norms, attention, soft-cap, sampling, Python.

Loads the mid-size model of `generate_speed.py` (real widths and vocabulary, 4 vision and 4 text layers,
random weights; saved once into a temporary folder) and decodes with every call into the extension's
product answered from a cache of its first result, so the step time left is everything but the products'
reading of the weights. Without the extension (``VLMZOO_CPU_KERNELS=0``) there is nothing to replace and
the figure includes the products.

    python benchmarks/decode_overhead.py                      # bfloat16, int8, int4, float32
    python benchmarks/decode_overhead.py --rows bfloat16 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import vlmzoo
from vlmzoo.bench import random_inputs, token_times
from vlmzoo.components import cpu_kernels

ROWS = {
    "bfloat16": ("bfloat16", None),
    "int8": ("bfloat16", "int8"),
    "int4": ("bfloat16", "int4"),
    "float32": ("float32", None),
}


class CachedProducts:
    """The extension with `linear` answered from a cache keyed by shape (a fresh copy each call)."""

    def __init__(self, module) -> None:
        self.module = module
        self.results = {}

    def __getattr__(self, name):
        return getattr(self.module, name)

    def linear(self, x, weight, scales, bias, path, float32_out):
        key = (x.shape[0], weight.shape[0], x.dtype, float32_out)
        if key not in self.results:
            self.results[key] = self.module.linear(x, weight, scales, bias, path, float32_out)
        return self.results[key].clone()


def step_times(model, inputs, steps: int, repeats: int) -> list[float]:
    """Mean decode step time (s) of each repeat, the prefill and the first step left out."""
    times = []
    for _ in range(repeats):
        stream = model.stream(**inputs, max_new_tokens=steps + 2, stop_at_eos=False)
        next(stream), next(stream)
        start = time.perf_counter()
        for _ in range(steps):
            next(stream)
        times.append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    module = cpu_kernels.load_extension()
    if module is not None:
        cached = CachedProducts(module)
        cpu_kernels.load_extension = lambda: cached  # every product now answers from the cache
    print(f"products replaced: {module is not None}; paths: {', '.join(cpu_kernels.instruction_sets()) or 'none'}")
    with tempfile.TemporaryDirectory() as directory:
        model = vlmzoo.build("paligemma2-3b-224", vision={"num_layers": 4}, decoder={"num_layers": 4}, seed=0)
        model.save_pretrained(directory)
        del model
        for row in args.rows:
            dtype, quantize = ROWS[row]
            model = vlmzoo.from_pretrained(directory, dtype=dtype, quantize=quantize, progress=False)
            inputs = random_inputs(model.config, 1, 12)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            token_times(model, inputs, 4)  # kernel choices and first touch, with the real products
            times = step_times(model, inputs, args.steps, args.repeats)
            median = statistics.median(times)
            print(f"{row:9s} around the products: {median * 1e3:.2f} ms per step (min {min(times) * 1e3:.2f})")


if __name__ == "__main__":
    main()
