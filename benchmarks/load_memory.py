"""Peak memory of loading a checkpoint: vlmzoo.from_pretrained versus transformers.

Makes a float32 checkpoint of about ``--size-gb`` (a variant's architecture with fewer layers and a
smaller vocabulary, random weights, written with ``save_pretrained``), then loads it in a fresh
subprocess per library and reports the peak RSS increase over the RSS measured just before loading
(after importing torch and the library, and building a throwaway model so that lazy imports are done).
The target for vlmzoo is below 1.3x the size on disk: the weights once, plus one tensor in flight.

    python benchmarks/load_memory.py --size-gb 1.0
    python benchmarks/load_memory.py --checkpoint /path/to/dir --skip-transformers
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MEASURE = textwrap.dedent(
    """
    import gc, json, resource, sys, time
    import torch

    def rss_mib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/self/status")

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    library, path, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
    if library == "vlmzoo":
        import vlmzoo
        vlmzoo.build("paligemma2-tiny", device="meta")  # plugins and lazy imports, before the baseline

        def load():
            return vlmzoo.from_pretrained(path, dtype=dtype, progress=False)
    else:
        import transformers
        from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        config = PaliGemmaConfig.from_pretrained(path)
        with torch.device("meta"):
            PaliGemmaForConditionalGeneration(config)  # lazy imports, before the baseline

        def load():
            return PaliGemmaForConditionalGeneration.from_pretrained(path, dtype=dtype)

    gc.collect()
    baseline, peak_before = rss_mib(), peak_mib()
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    gc.collect()
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({
        "baseline_mib": baseline, "peak_before_mib": peak_before, "peak_mib": peak_mib(),
        "after_mib": rss_mib(), "params_mib": params, "seconds": seconds,
    }))
    """
)


def make_checkpoint(
    directory: Path, variant: str, size_gb: float, vision_layers: int, vocab_size: int, max_shard_size: str
) -> None:
    """A random float32 checkpoint of ``variant`` with as many decoder layers as fit, topped up with vocabulary."""
    import torch

    import vlmzoo

    base = vlmzoo.get_config(variant)

    def shrunk(layers: int, vocab: int):
        return base.with_overrides({
            "vision": {"num_layers": vision_layers},
            "decoder": {"vocab_size": vocab, "num_layers": layers, "layer_types": None},
            "image_token_id": vocab - 64,
        })  # fmt: skip

    def nbytes(layers: int, vocab: int) -> int:
        return 4 * vlmzoo.build(shrunk(layers, vocab), device="meta").num_parameters()

    target = size_gb * 1e9
    per_layer = nbytes(2, vocab_size) - nbytes(1, vocab_size)
    layers = max(0, int((target - nbytes(0, vocab_size)) // per_layer))
    row = 4 * base.decoder.hidden_size
    vocab = vocab_size + max(0, int((target - nbytes(layers, vocab_size)) // row)) // 64 * 64
    config = shrunk(layers, vocab)
    print(f"building {variant} with {layers} decoder layers, {vision_layers} vision layers, vocab {vocab}")
    model = vlmzoo.build(config, dtype=torch.float32, seed=0)
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    del model


def measure(library: str, directory: Path, dtype: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, library, str(directory), dtype], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{library} load failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="approximate checkpoint size (default 1.0)")
    parser.add_argument("--variant", default="paligemma2-3b-224", help="architecture to shrink (default %(default)s)")
    parser.add_argument("--vision-layers", type=int, default=4, help="vision encoder layers (default 4)")
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocabulary rows (default 32768)")
    parser.add_argument("--max-shard-size", default="5GB", help="shard the generated checkpoint (default 5GB)")
    parser.add_argument("--checkpoint", type=Path, help="measure this existing checkpoint directory instead")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="load dtype")
    parser.add_argument("--skip-transformers", action="store_true", help="measure vlmzoo only")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint (its path is printed)")
    args = parser.parse_args(argv)

    temp = None
    if args.checkpoint is not None:
        directory = args.checkpoint
    else:
        directory = temp = Path(tempfile.mkdtemp(prefix="vlmzoo-load-memory-"))
        make_checkpoint(directory, args.variant, args.size_gb, args.vision_layers, args.vocab_size, args.max_shard_size)
    try:
        files = sorted(directory.glob("*.safetensors"))
        size_mib = sum(p.stat().st_size for p in files) / 2**20
        print(
            f"checkpoint: {directory}  ({size_mib:,.0f} MiB = {size_mib * 2**20 / 1e9:.2f} GB of safetensors "
            f"in {len(files)} file(s) on disk; loaded as {args.dtype})"
        )
        libraries = ["vlmzoo"] + ([] if args.skip_transformers else ["transformers"])
        print(f"{'library':<13} {'baseline':>9} {'peak':>9} {'increase':>9} {'x file':>7} {'params':>9} {'time':>7}")
        ratios = {}
        for library in libraries:
            r = measure(library, directory, args.dtype)
            increase = r["peak_mib"] - r["baseline_mib"]
            ratios[library] = increase / size_mib
            print(
                f"{library:<13} {r['baseline_mib']:>8,.0f}M {r['peak_mib']:>8,.0f}M {increase:>8,.0f}M "
                f"{ratios[library]:>6.2f}x {r['params_mib']:>8,.0f}M {r['seconds']:>6.1f}s"
            )
        print("(MiB; baseline = RSS after imports, before loading; peak = ru_maxrss; increase = peak - baseline)")
        if args.dtype == "float32" and ratios["vlmzoo"] >= 1.3:
            print(f"vlmzoo peak {ratios['vlmzoo']:.2f}x the file size: over the 1.3x target")
            return 1
        return 0
    finally:
        if temp is not None and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
