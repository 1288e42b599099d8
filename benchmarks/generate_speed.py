"""Generation speed and memory: vlmzoo against transformers on the same checkpoint and inputs.

Builds a mid-size PaliGemma 2 with the real widths and the real 257216-token vocabulary (a few vision
and text layers, random weights), saves it once, loads it with both libraries, and times them
alternately in one process: time to first token (prefill + first token) and decode tokens/s (the
median time between consecutive tokens, so prefill noise does not leak into the decode figure).
Peak memory is measured per library in a fresh subprocess (peak RSS growth during generation on
CPU, peak allocated memory on CUDA).

    python benchmarks/generate_speed.py                      # float32 and bfloat16, batch 1 and 8
    python benchmarks/generate_speed.py --dtypes float32 --batches 1 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import vlmzoo


def make_checkpoint(directory: str, vision_layers: int, text_layers: int) -> None:
    model = vlmzoo.build(
        "paligemma2-3b-224",
        vision={"num_layers": vision_layers},
        decoder={"num_layers": text_layers},
        seed=0,
    )
    model.save_pretrained(directory)


def make_inputs(config, batch: int, text_tokens: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    n_image = config.num_image_tokens
    rows, lengths = [], []
    for row in range(batch):
        length = text_tokens - (row % 4)  # different prompt lengths → left padding
        text = torch.randint(1000, 200000, (length,), generator=generator)
        rows.append(
            torch.cat([torch.full((n_image,), config.image_token_id), torch.tensor([2]), text, torch.tensor([108])])
        )
        lengths.append(len(rows[-1]))
    width = max(lengths)
    input_ids = torch.zeros(batch, width, dtype=torch.long)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = ids
        attention_mask[row, width - len(ids) :] = 1
    pixel_values = torch.rand(batch, 3, config.vision.image_size, config.vision.image_size, generator=generator) * 2 - 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": pixel_values,
    }


def load(engine: str, directory: str, dtype: torch.dtype, device: str):
    if engine == "vlmzoo":
        return vlmzoo.from_pretrained(directory, dtype=dtype, device=device, progress=False)
    from transformers import PaliGemmaForConditionalGeneration

    return PaliGemmaForConditionalGeneration.from_pretrained(directory, dtype=dtype).to(device).eval()


def run(engine: str, model, inputs, new_tokens: int, device: str = "cpu") -> list[float]:
    """Generate ``new_tokens`` greedily; returns the time (s, from the call) at which each token was ready."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    stamps: list[float] = []
    if engine == "vlmzoo":
        for _ in model.stream(**inputs, max_new_tokens=new_tokens, stop_at_eos=False):
            sync()
            stamps.append(time.perf_counter() - start)
        return stamps

    class Streamer:  # transformers calls put() with the prompt first, then with each new token
        def __init__(self) -> None:
            self.calls = 0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls > 1:
                sync()
                stamps.append(time.perf_counter() - start)

        def end(self) -> None:
            pass

    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            streamer=Streamer(),
        )
    return stamps


def speed(directory, dtype, batch, args) -> dict:
    models = {engine: load(engine, directory, dtype, args.device) for engine in ("transformers", "vlmzoo")}
    inputs = make_inputs(models["vlmzoo"].config, batch, args.text_tokens)
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    for engine, model in models.items():  # warm-up
        run(engine, model, inputs, 2, args.device)
    ttft, step = {e: [] for e in models}, {e: [] for e in models}
    for _ in range(args.repeats):
        for engine, model in models.items():  # alternate so drift hits both alike
            stamps = run(engine, model, inputs, args.new_tokens, args.device)
            ttft[engine].append(stamps[0])
            step[engine].extend(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    result = {"dtype": str(dtype).removeprefix("torch."), "batch": batch}
    for engine in models:
        result[engine] = {
            "ttft_s": statistics.median(ttft[engine]),
            "decode_tok_s": batch / statistics.median(step[engine]),
        }
    del models
    return result


def memory_child(engine, directory, dtype_name, batch, args) -> None:
    dtype = vlmzoo.dtypes.resolve_dtype(dtype_name)
    model = load(engine, directory, dtype, args.device)
    config = vlmzoo.checkpoints.loading.read_config(__import__("pathlib").Path(directory))[0]
    inputs = make_inputs(config, batch, args.text_tokens)
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(engine, model, inputs, args.new_tokens, args.device)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_now()
        run(engine, model, inputs, args.new_tokens, args.device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_bytes": peak}))


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(engine, directory, dtype, batch, args) -> float:
    command = [sys.executable, __file__, "--child", engine, directory, str(dtype).removeprefix("torch."), str(batch)]
    command += ["--text-tokens", str(args.text_tokens), "--new-tokens", str(args.new_tokens), "--device", args.device]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["peak_bytes"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--text-tokens", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, directory, dtype_name, batch = args.child
        memory_child(engine, directory, dtype_name, int(batch), args)
        return
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint(directory, args.vision_layers, args.text_layers)
        header = (
            f"{'dtype':9} {'batch':>5} | {'TTFT s (hf / ours)':>20} {'ratio':>6} | "
            f"{'decode tok/s (hf / ours)':>26} {'ratio':>6} | {'peak MiB (hf / ours)':>21}"
        )
        print(header)
        print("-" * len(header))
        for dtype_name in args.dtypes:
            dtype = vlmzoo.dtypes.resolve_dtype(dtype_name)
            for batch in args.batches:
                r = speed(directory, dtype, batch, args)
                hf, ours = r["transformers"], r["vlmzoo"]
                if args.no_memory:
                    mem = "n/a"
                else:
                    mem = f"{memory('transformers', directory, dtype, batch, args):9.0f} / "
                    mem += f"{memory('vlmzoo', directory, dtype, batch, args):9.0f}"
                print(
                    f"{r['dtype']:9} {batch:5d} | {hf['ttft_s']:9.3f} / {ours['ttft_s']:8.3f} "
                    f"{hf['ttft_s'] / ours['ttft_s']:5.2f}x | {hf['decode_tok_s']:11.2f} / "
                    f"{ours['decode_tok_s']:11.2f} {ours['decode_tok_s'] / hf['decode_tok_s']:5.2f}x | {mem:>21}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
