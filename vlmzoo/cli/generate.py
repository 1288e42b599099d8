"""``vlmzoo generate``: text for an image and a prompt, from a checkpoint."""

from __future__ import annotations

import argparse


def _generate(args: argparse.Namespace) -> int:
    import vlmzoo

    vlm = vlmzoo.load(
        args.model, dtype=args.dtype, device=args.device, revision=args.revision, quantize=args.quantize,
        compile=args.compile,
    )
    options = {
        name: value
        for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
        if (value := getattr(args, name)) is not None
    }
    common = dict(max_new_tokens=args.max_new_tokens, sampler=args.sampler, seed=args.seed, **options)
    if args.stream:
        for piece in vlm.stream(args.image, args.prompt, **common):
            print(piece, end="", flush=True)
        print()
    else:
        print(vlm.generate(args.image, args.prompt, **common))
    return 0


def register(commands) -> None:
    gen = commands.add_parser("generate", help="generate text for an image and a prompt")
    gen.add_argument("model", help="checkpoint directory or hub repo id, e.g. google/paligemma2-3b-mix-224")
    gen.add_argument("--image", required=True, help="image file")
    gen.add_argument("--prompt", required=True, help="task prompt, e.g. 'caption en' or 'detect cat'")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--sampler", default="greedy", help="sampler name(s), e.g. greedy or temperature+top_p")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--min-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoint's)")
    gen.add_argument("--device", help="e.g. cpu or cuda (default: cpu)")
    gen.add_argument("--revision", help="hub revision (branch, tag or commit)")
    gen.add_argument("--stream", action="store_true", help="print text as it is made")
    gen.add_argument("--quantize", help="weight-only quantization of the decoder: int8 or int4")
    gen.add_argument("--compile", action="store_true", help="compile the decode step (pays off on long outputs)")
    gen.set_defaults(run=_generate)
