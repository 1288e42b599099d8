"""``vlmzoo bench``: decode speed of a model on this machine, against its memory-bandwidth bound."""

from __future__ import annotations

import argparse
import resource

from vlmzoo.cli.common import load_model
from vlmzoo.cli.options import add_device_option, announce_device

MIDSIZE = "paligemma2-3b-224"


def _bench(args: argparse.Namespace) -> int:
    import torch

    import vlmzoo
    from vlmzoo.bench import decode_weight_bytes, measure, random_inputs, read_bandwidth
    from vlmzoo.components.linear import kernel_choices

    if args.model:
        model = load_model(args, dtype=args.dtype, quantize=args.quantize)
        name = args.model
    else:
        model = vlmzoo.build(
            MIDSIZE,
            vision={"num_layers": args.layers},
            decoder={"num_layers": args.layers},
            dtype=args.dtype,
            device=args.device,
            seed=0,
            quantize=args.quantize,
        )
        name = f"random {MIDSIZE} with {args.layers}+{args.layers} layers"
        announce_device(model.device, args.device)
    weight_bytes = decode_weight_bytes(model)
    device = str(model.device)
    print(
        f"{name}: {str(model.dtype).removeprefix('torch.')}, quantize={args.quantize}, {device}, "
        f"{torch.get_num_threads()} threads, {weight_bytes / 2**20:.0f} MiB read per decode step"
    )
    print(f"{'batch':>5} {'TTFT s':>8} {'decode tok/s':>13} {'step ms':>8} {'GB/s':>6} {'of bound':>8}")
    for batch in args.batch:
        inputs = random_inputs(model.config, batch, args.text_tokens)
        result = measure(model, inputs, args.new_tokens, args.repeats, compile=args.compile)
        bandwidth = read_bandwidth(device=device)
        speed = weight_bytes / result.step_s
        print(
            f"{batch:5d} {result.ttft_s:8.3f} {result.decode_tok_s:13.2f} {result.step_s * 1e3:8.1f} "
            f"{speed / 1e9:6.1f} {speed / bandwidth:8.0%}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s, peak RSS of this process {peak:.0f} MiB")
    print("kernels: " + ", ".join(f"{fmt}/{rows}: {kernel}" for (_, fmt, rows), kernel in kernel_choices().items()))
    return 0


def register(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="decode speed on this machine, against its memory-bandwidth bound",
        description="Times greedy generation (time to first token, decode tokens/s) and compares the bytes of "
        "weights each decode step reads with the memory read bandwidth measured in the same run. Without a "
        f"model, a random {MIDSIZE} with the real widths and vocabulary and a few layers is built.",
    )
    bench.add_argument("model", nargs="?", help="checkpoint directory or hub repo id (default: a random model)")
    bench.add_argument("--dtype", default="bfloat16", help="float32, bfloat16 or float16 (default: bfloat16)")
    bench.add_argument("--quantize", help="weight-only quantization: int8 or int4")
    bench.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes (default: 1)")
    bench.add_argument("--layers", type=int, default=4, help="vision and text layers of the random model")
    bench.add_argument("--text-tokens", type=int, default=12)
    bench.add_argument("--new-tokens", type=int, default=16)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--compile", action="store_true", help="compile the decode step with torch.compile")
    add_device_option(bench)
    bench.set_defaults(run=_bench)
