"""Generation speed and memory: vlmzoo against transformers, and against the machine's bandwidth bound.

Builds a mid-size PaliGemma 2 with the real widths and the real 257216-token vocabulary (a few vision
and text layers, random weights), saves it once, and for each row (float32, bfloat16, int8, int4)
loads it with vlmzoo and with transformers and times them alternately in one process: time to first
token, decode tokens/s (the median time between consecutive tokens), and the fraction of the
memory-bandwidth bound (weight bytes one decode step reads ÷ step time ÷ the read bandwidth measured
between the runs). Quantized rows run with bfloat16 activations and are compared with transformers
in bfloat16 (timed alternately) and in float32 (from the float32 row); their output is compared with
vlmzoo in float32: the largest logit error (relative to the largest logit) and greedy token agreement.
Peak memory (load + generation, RSS above the bare interpreter) is measured per library in a fresh
subprocess.

    python benchmarks/generate_speed.py                                 # every row, batch 1 and 8
    python benchmarks/generate_speed.py --rows float32 int8 --batches 1 --compile
    python benchmarks/generate_speed.py --torchao                       # plus transformers + torchao int8
    python benchmarks/generate_speed.py --big-model /path/with/20GB     # random paligemma2-10b-224, int8
    python benchmarks/generate_speed.py --only-ceilings                 # each linear kernel, one-row products
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vlmzoo
from vlmzoo.bench import decode_weight_bytes, random_inputs, read_bandwidth, summarize, token_times
from vlmzoo.components import cpu_kernels
from vlmzoo.components.linear import kernel_choices

#: row name → (vlmzoo dtype, quantization, transformers dtype it is timed against)
ROWS = {
    "float32": ("float32", None, "float32"),
    "bfloat16": ("bfloat16", None, "bfloat16"),
    "int8": ("bfloat16", "int8", "bfloat16"),
    "int4": ("bfloat16", "int4", "bfloat16"),
}
MIDSIZE = "paligemma2-3b-224"


def make_checkpoint(directory: str, vision_layers: int, text_layers: int) -> None:
    model = vlmzoo.build(MIDSIZE, vision={"num_layers": vision_layers}, decoder={"num_layers": text_layers}, seed=0)
    model.save_pretrained(directory)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load(engine: str, directory: str, row: str):
    dtype, quantize, hf_dtype = ROWS[row]
    if engine == "vlmzoo":
        return vlmzoo.from_pretrained(directory, dtype=dtype, device=DEVICE, quantize=quantize, progress=False)
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(directory, dtype=getattr(torch, hf_dtype))
    model = model.to(DEVICE).eval()
    if engine == "transformers+torchao":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model.model.language_model, Int8WeightOnlyConfig())
    return model


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def hf_token_times(model, inputs, new_tokens: int) -> list[float]:
    start = time.perf_counter()
    stamps: list[float] = []

    class Streamer:  # transformers calls put() with the prompt first, then with each new token
        calls = 0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls > 1:
                _sync()
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


def hf_weight_bytes(model) -> int:
    params = {id(p): p for p in model.model.language_model.parameters()}
    params.update({id(p): p for p in model.lm_head.parameters()})
    return sum(p.numel() * p.element_size() for p in params.values())


def timed(engine: str, model, inputs, new_tokens: int, compile: bool = False) -> list[float]:
    if engine == "vlmzoo":
        return token_times(model, inputs, new_tokens, compile=compile)
    return hf_token_times(model, inputs, new_tokens)


def prepared(inputs, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {k: v.to(DEVICE) for k, v in inputs.items()}
    out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


@torch.inference_mode()
def outputs(model, inputs, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 last-position logits of the prompt, and the greedy tokens."""
    logits = model(**inputs, logits_to_keep=1).logits[:, -1].float()
    tokens = model.generate(**inputs, max_new_tokens=new_tokens, stop_at_eos=False)
    return logits, tokens


def speed_row(directory: str, row: str, batches: list[int], args, reference: dict) -> list[dict]:
    engines = {"transformers": load("transformers", directory, row), "vlmzoo": load("vlmzoo", directory, row)}
    ours_bytes = decode_weight_bytes(engines["vlmzoo"])
    hf_bytes = hf_weight_bytes(engines["transformers"])
    results = []
    for batch in batches:
        base = random_inputs(engines["vlmzoo"].config, batch, args.text_tokens)
        dtype = engines["vlmzoo"].dtype
        inputs = prepared(base, dtype)
        plan = [("transformers", False), ("vlmzoo", False)] + ([("vlmzoo", True)] if args.compile else [])
        for engine, compile in plan:  # warm-up: kernel choices, compilation, first-touch of the weights
            timed(engine, engines[engine], inputs, args.new_tokens, compile)
        runs: dict[tuple[str, bool], list[list[float]]] = {key: [] for key in plan}
        bandwidths = []
        for _ in range(args.repeats):
            for engine, compile in plan:  # alternate, so load on the machine hits every engine alike
                runs[(engine, compile)].append(timed(engine, engines[engine], inputs, args.new_tokens, compile))
            bandwidths.append(read_bandwidth(device=DEVICE))
        result = {"row": row, "batch": batch, "bandwidth": statistics.median(bandwidths)}
        result["bytes"] = {"vlmzoo": ours_bytes, "transformers": hf_bytes}
        for (engine, compile), times in runs.items():
            m = summarize(times, batch)
            result[engine + ("+compile" if compile else "")] = {"ttft_s": m.ttft_s, "step_s": m.step_s}
        if row == "float32":
            reference[batch] = outputs(engines["vlmzoo"], prepared(base, torch.float32), args.new_tokens)
        if ROWS[row][1] is not None and batch in reference:
            logits, tokens = outputs(engines["vlmzoo"], inputs, args.new_tokens)
            ref_logits, ref_tokens = reference[batch]
            result["logit_error"] = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
            result["agreement"] = (tokens == ref_tokens).float().mean().item()
        if args.memory:
            result["peak_mib"] = {e: memory(e, directory, row, batch, args) for e in ("transformers", "vlmzoo")}
        results.append(result)
        print(format_row(result, reference), flush=True)
    del engines
    gc.collect()
    return results


def torchao_row(directory: str, args) -> None:
    """transformers with torchao's int8 weight-only config (eager), timed against vlmzoo int8."""
    try:
        engines = {"transformers+torchao": load("transformers+torchao", directory, "int8")}
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"transformers + torchao int8: could not run ({type(exc).__name__}: {exc})")
        return
    engines["vlmzoo"] = load("vlmzoo", directory, "int8")
    inputs = prepared(random_inputs(engines["vlmzoo"].config, 1, args.text_tokens), torch.bfloat16)
    hf = engines["transformers+torchao"]
    times = {"torchao": [], "vlmzoo": []}
    new_tokens = min(args.new_tokens, 6)  # eager torchao int8 is slow on CPUs: keep this row short
    try:
        hf_token_times(hf, inputs, 2)
        token_times(engines["vlmzoo"], inputs, 2)
        for _ in range(args.repeats):
            times["torchao"].append(hf_token_times(hf, inputs, new_tokens))
            times["vlmzoo"].append(token_times(engines["vlmzoo"], inputs, new_tokens))
    except Exception as exc:  # noqa: BLE001
        print(f"transformers + torchao int8: failed while generating ({type(exc).__name__}: {exc})")
        return
    ao, ours = summarize(times["torchao"], 1), summarize(times["vlmzoo"], 1)
    print(
        f"int8 batch 1, transformers + torchao Int8WeightOnlyConfig (eager) / vlmzoo int8: TTFT {ao.ttft_s:.3f} / "
        f"{ours.ttft_s:.3f} s, decode {ao.decode_tok_s:.2f} / {ours.decode_tok_s:.2f} tok/s "
        f"({ours.decode_tok_s / ao.decode_tok_s:.2f}x)"
    )


def format_row(r: dict, reference: dict) -> str:
    hf, ours = r["transformers"], r["vlmzoo"]
    hf_tok, ours_tok = r["batch"] / hf["step_s"], r["batch"] / ours["step_s"]
    fraction = r["bytes"]["vlmzoo"] / ours["step_s"] / r["bandwidth"]
    hf_fraction = r["bytes"]["transformers"] / hf["step_s"] / r["bandwidth"]
    ttft_ratio = hf["ttft_s"] / ours["ttft_s"]
    line = (
        f"{r['row']:8} {r['batch']:5d} | {hf['ttft_s']:7.2f} / {ours['ttft_s']:6.2f} {ttft_ratio:5.2f}x"
        f" | {hf_tok:7.2f} / {ours_tok:7.2f} {ours_tok / hf_tok:5.2f}x"
    )
    vs32 = BASE.get(("float32", r["batch"]))
    line += f" {ours_tok / vs32:5.2f}x" if vs32 and r["row"] != "float32" else "     -"
    compiled = r.get("vlmzoo+compile")
    line += f" | {r['batch'] / compiled['step_s']:7.2f}" if compiled else " |       -"
    line += f" | {r['bandwidth'] / 1e9:5.1f} {hf_fraction:5.0%} {fraction:5.0%}"
    mem = r.get("peak_mib")
    line += f" | {mem['transformers']:6.0f} / {mem['vlmzoo']:6.0f}" if mem else " |      - /      -"
    if "logit_error" in r:
        line += f" | {r['logit_error']:.4f} {r['agreement']:4.0%}"
    if r["row"] == "float32":
        BASE[("float32", r["batch"])] = hf_tok
    return line


BASE: dict[tuple[str, int], float] = {}
HEADER = (
    f"{'row':8} {'batch':>5} | {'TTFT s (hf / ours)':>21} | {'decode tok/s (hf / ours)':>23} {'vs hf32':>6} | "
    f"{'compiled':>7} | {'GB/s':>5} {'hf':>5} {'ours':>5} | {'peak MiB (hf / ours)':>15} | logit err, agree"
)


# ---- memory, in a fresh process ---------------------------------------------------------------------


def _status(field: str) -> int:
    """A memory figure of this process in bytes from /proc/self/status (VmRSS: now, VmHWM: the peak).

    VmHWM starts afresh at exec, unlike ``ru_maxrss``, which a subprocess inherits from its parent."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _rss_now() -> int:
    return _status("VmRSS")


def memory_child(engine: str, directory: str, row: str, batch: int, args) -> None:
    """Peak RSS above the bare interpreter on CPUs; peak allocated device memory on CUDA."""
    base = _rss_now()
    model = load(engine, directory, row)
    config = vlmzoo.checkpoints.loading.read_config(Path(directory))[0]
    inputs = prepared(random_inputs(config, batch, args.text_tokens), getattr(torch, ROWS[row][0]))
    timed(engine, model, inputs, args.new_tokens)
    peak = torch.cuda.max_memory_allocated() if DEVICE.startswith("cuda") else _status("VmHWM") - base
    print(json.dumps({"peak_bytes": peak}))


def memory(engine: str, directory: str, row: str, batch: int, args) -> float:
    command = [sys.executable, __file__, "--child", engine, directory, row, str(batch)]
    command += ["--text-tokens", str(args.text_tokens), "--new-tokens", str(args.new_tokens), "--device", DEVICE]
    env = {**os.environ, "VLMZOO_LINEAR_CALIBRATION": "0"}  # the timing runs in the parent process
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()
    return json.loads(out[-1])["peak_bytes"] / 2**20


# ---- kernel ceilings: how fast each registered kernel reads one row's weights ---------------------

#: (out, in) of the weights timed per kernel: the MLP projection of the mid-size model.
CEILING_SHAPE = (9216, 2304)
CEILING_BYTES = 2**30  # bytes of stored weights per timing: far beyond the last-level cache, and long enough to time


def kernel_ceilings(device: str = "cpu", repeats: int = 5) -> list[dict]:
    """Each registered linear kernel on one-row products over 1 GiB of stored weights.

    A decode step is mostly such products, so a kernel's share of the bandwidth bound here is the most a
    whole step on it can reach; it says how far any model-level speedup can go on this machine.
    """
    from vlmzoo.plugins import get_registries

    registries = get_registries()
    base = torch.randn(*CEILING_SHAPE, generator=torch.Generator().manual_seed(0)) * 0.02
    formats = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": None, "int4": None}
    results = []
    for fmt, dtype in formats.items():
        kernels = [(e.key, e.value) for e in registries.linear_kernel.entries() if e.value.supports(device, fmt, 1)]
        if not kernels:
            continue
        if dtype is None:
            weight, scales = registries.quantization.get(fmt).quantize(base.to(device))
        else:
            weight, scales = base.to(device=device, dtype=dtype), None
        one = weight.numel() * weight.element_size() + (0 if scales is None else scales.nbytes)
        count = max(1, CEILING_BYTES // one)
        weights = [(weight.clone(), None if scales is None else scales.clone()) for _ in range(count)]
        nbytes = count * one
        x = torch.randn(1, CEILING_SHAPE[1], device=device).to(dtype or torch.bfloat16)
        times: dict[str, list[float]] = {name: [] for name, _ in kernels}
        bandwidths = []
        failed: dict[str, str] = {}
        for _ in range(repeats + 1):  # kernels alternate within each round, so drift affects all alike
            bandwidths.append(read_bandwidth(repeats=3, device=device))  # measured in every round, too
            for name, kernel in kernels:
                if name in failed:
                    continue
                try:
                    _sync()
                    start = time.perf_counter()
                    for w, sc in weights:
                        kernel.fn(x, w, None, sc)
                    _sync()
                    times[name].append(time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001 - a kernel that cannot run here is reported, not fatal
                    failed[name] = str(exc).splitlines()[0]
        for name, _ in kernels:
            if name in failed:
                results.append({"format": fmt, "kernel": name, "error": failed[name]})
                continue
            step = statistics.median(times[name][1:])
            shares = [nbytes / t / bw for t, bw in zip(times[name][1:], bandwidths[1:], strict=True)]
            results.append({
                "format": fmt, "kernel": name, "ms_per_gib_float32": step / count / (base.numel() * 4) * 2**30 * 1e3,
                "gb_s": nbytes / step / 1e9, "of_bound": statistics.median(shares),
            })  # fmt: skip
        del weights
        gc.collect()
    return results


def print_ceilings(results: list[dict]) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    shape = f"{CEILING_SHAPE[0]}x{CEILING_SHAPE[1]}"
    print(f"one-row products, {shape} weights, 1 GiB of them per timing; load average {load}")
    print(f"{'format':9} {'kernel':18} {'GB/s':>6} {'of bound':>8} {'x float32':>9}")
    float32 = min((r["ms_per_gib_float32"] for r in results if r["format"] == "float32" and "gb_s" in r), default=None)
    for r in results:
        if "error" in r:
            print(f"{r['format']:9} {r['kernel']:18} failed: {r['error']}")
            continue
        speedup = "" if float32 is None else f"{float32 / r['ms_per_gib_float32']:8.2f}x"
        print(f"{r['format']:9} {r['kernel']:18} {r['gb_s']:6.1f} {r['of_bound']:8.0%} {speedup:>9}")


# ---- the big model: real paligemma2-10b-224 shapes, random bfloat16 weights, loaded in int8 --------


BIG_MODEL = "paligemma2-10b-224"


def write_random_checkpoint(directory: Path, name: str = BIG_MODEL, chunk: int = 2**24) -> None:
    """A safetensors checkpoint with random bfloat16 weights, written tensor by tensor (never all in memory)."""
    from vlmzoo.checkpoints import config_to_hf
    from vlmzoo.paligemma.checkpoint_keys import to_hub_key

    model = vlmzoo.build(name, device="meta")
    shapes = {to_hub_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape) * 2
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "model.safetensors.partial"
    generator = torch.Generator().manual_seed(0)
    # A few random blocks, cycled: the values only need to look like weights, and drawing 10 billion
    # normal samples would take longer than everything else the benchmark does.
    pool = [
        (torch.randn(chunk, generator=generator) * 0.02).to(torch.bfloat16).view(torch.uint8).numpy() for _ in range(7)
    ]
    written = 0
    with open(partial, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            left = math.prod(shape)
            while left:
                count = min(chunk, left)
                handle.write(pool[written % len(pool)][: count * 2].tobytes())
                written += 1
                left -= count
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.config, dtype="bfloat16"), indent=2))
    partial.rename(directory / "model.safetensors")


def big_model_child(directory: str, args) -> None:
    base = _rss_now()
    start = time.perf_counter()
    model = vlmzoo.from_pretrained(directory, dtype="bfloat16", quantize="int8", progress=False)
    load_s = time.perf_counter() - start
    load_peak = _status("VmHWM") - base
    inputs = prepared(random_inputs(model.config, 1, args.text_tokens), torch.bfloat16)
    token_times(model, inputs, 2)
    m = summarize([token_times(model, inputs, args.new_tokens) for _ in range(args.repeats)], 1)
    weight_bytes = decode_weight_bytes(model)
    bandwidth = read_bandwidth()
    peak = _status("VmHWM") - base
    print(json.dumps({
        "load_s": load_s, "load_peak": load_peak, "peak": peak, "ttft_s": m.ttft_s, "step_s": m.step_s,
        "weight_bytes": weight_bytes, "bandwidth": bandwidth,
        "model_bytes": sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())),
    }))  # fmt: skip


def big_model_hf_child(directory: str, args) -> None:
    """transformers on the same file, in bfloat16 (it has no weight-only int8 of its own on CPUs)."""
    from transformers import PaliGemmaForConditionalGeneration

    base = _rss_now()
    start = time.perf_counter()
    model = PaliGemmaForConditionalGeneration.from_pretrained(directory, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - start
    load_peak = _status("VmHWM") - base
    config = vlmzoo.get_config(BIG_MODEL)  # the shapes write_random_checkpoint wrote
    inputs = prepared(random_inputs(config, 1, args.text_tokens), torch.bfloat16)
    hf_token_times(model, inputs, 2)
    m = summarize([hf_token_times(model, inputs, args.new_tokens) for _ in range(args.repeats)], 1)
    print(json.dumps({"load_s": load_s, "load_peak": load_peak, "peak": _status("VmHWM") - base,
                      "ttft_s": m.ttft_s, "step_s": m.step_s}))  # fmt: skip


def _run_first_to_go(command: list[str]) -> tuple[dict | None, str]:
    """Run a child that the kernel kills first if memory runs out (so this process and others survive).

    Capping its address space instead would refuse transformers' memory map of the whole file.
    """

    def first_to_go() -> None:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")

    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=first_to_go)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1]), ""
    if done.returncode == -9:
        return None, "killed by the kernel: out of memory"
    error = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return None, error[-1] if error else f"exit status {done.returncode}"


def big_model(directory: Path, args) -> None:
    checkpoint = directory / "paligemma2-10b-224-random"
    if not (checkpoint / "model.safetensors").is_file():
        print(f"writing a random paligemma2-10b-224 checkpoint (bfloat16) to {checkpoint} ...", flush=True)
        write_random_checkpoint(checkpoint)
    file_bytes = (checkpoint / "model.safetensors").stat().st_size
    command = [sys.executable, __file__, "--big-child", str(checkpoint)]
    command += ["--text-tokens", str(args.text_tokens), "--new-tokens", str(args.new_tokens)]
    command += ["--repeats", str(args.repeats)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    r = json.loads(out[-1])
    available = _mem_available()
    print(
        f"paligemma2-10b-224 (random, bfloat16 file of {file_bytes / 2**30:.1f} GiB) loaded with quantize='int8': "
        f"model {r['model_bytes'] / 2**30:.1f} GiB, load {r['load_s']:.0f} s, peak RSS while loading "
        f"{r['load_peak'] / 2**30:.1f} GiB, peak with generation {r['peak'] / 2**30:.1f} GiB; "
        f"TTFT {r['ttft_s']:.1f} s, "
        f"decode {1 / r['step_s']:.3f} tok/s ({r['step_s']:.1f} s/step, "
        f"{r['weight_bytes'] / r['step_s'] / r['bandwidth']:.0%} of the bandwidth bound at "
        f"{r['bandwidth'] / 1e9:.1f} GB/s)"
    )
    command = [sys.executable, __file__, "--big-hf-child", str(checkpoint)]
    command += ["--text-tokens", str(args.text_tokens), "--new-tokens", str(args.new_tokens)]
    command += ["--repeats", str(args.repeats)]
    hf, error = _run_first_to_go(command)
    if hf is None:
        print(f"transformers, the same file in bfloat16 ({available / 2**30:.1f} GiB free): {error}")
        return
    print(
        f"transformers, the same file in bfloat16: load {hf['load_s']:.0f} s, peak RSS while loading "
        f"{hf['load_peak'] / 2**30:.1f} GiB, peak with generation {hf['peak'] / 2**30:.1f} GiB; "
        f"TTFT {hf['ttft_s']:.1f} s, "
        f"decode {1 / hf['step_s']:.3f} tok/s ({hf['step_s']:.1f} s/step); vlmzoo int8 decodes "
        f"{hf['step_s'] / r['step_s']:.2f}x as fast in {r['peak'] / hf['peak']:.0%} of the memory"
    )


def _mem_available() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--text-tokens", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time vlmzoo with the compiled decode step")
    parser.add_argument("--torchao", action="store_true", help="also time transformers + torchao int8 (eager)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory subprocesses")
    parser.add_argument("--device", default=DEVICE, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--big-model", type=Path, help="directory for the random paligemma2-10b-224 checkpoint")
    parser.add_argument(
        "--ceilings", action="store_true", help="also time every linear kernel on one-row products (no models)"
    )
    parser.add_argument("--only-ceilings", action="store_true", help="time the kernels only, skip the model rows")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--big-child", help=argparse.SUPPRESS)
    parser.add_argument("--big-hf-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    DEVICE = args.device
    if args.child:
        engine, directory, row, batch = args.child
        memory_child(engine, directory, row, int(batch), args)
        return
    if args.big_child:
        big_model_child(args.big_child, args)
        return
    if args.big_hf_child:
        big_model_hf_child(args.big_hf_child, args)
        return
    bandwidth = read_bandwidth(device=DEVICE) / 1e9
    print(f"torch {torch.__version__}, {DEVICE}, {torch.get_num_threads()} threads, bandwidth {bandwidth:.1f} GB/s")
    if DEVICE == "cpu":
        print(f"vlmzoo CPU kernel paths: {', '.join(cpu_kernels.instruction_sets()) or 'none (PyTorch kernels)'}")
    if args.ceilings or args.only_ceilings:
        print_ceilings(kernel_ceilings(DEVICE))
        if args.only_ceilings:
            return
    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint(directory, args.vision_layers, args.text_layers)
        print(HEADER)
        print("-" * len(HEADER))
        reference: dict = {}
        rows = sorted(args.rows, key=list(ROWS).index)
        if any(ROWS[r][1] for r in rows) and "float32" not in rows:
            rows = ["float32", *rows]  # the reference for logit error and agreement
        for row in rows:
            speed_row(directory, row, args.batches, args, reference)
        if args.torchao:
            torchao_row(directory, args)
    print("kernels: " + ", ".join(f"{fmt}/{rows}: {name}" for (_, fmt, rows), name in kernel_choices().items()))
    if args.big_model:
        big_model(args.big_model, args)


if __name__ == "__main__":
    main()
