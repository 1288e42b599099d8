"""``vlmzoo convert-vae``: big_vision's mask decoder weights (vae-oid.npz) as safetensors."""

from __future__ import annotations

import argparse


def _convert_vae(args: argparse.Namespace) -> int:
    from vlmzoo.tasks import convert_vae_to_safetensors

    out = convert_vae_to_safetensors(args.npz, args.output)
    print(out)
    return 0


def register(commands) -> None:
    convert = commands.add_parser(
        "convert-vae",
        help="write the segmentation mask decoder of vae-oid.npz as safetensors",
        description="Read big_vision's vae-oid.npz (without pickle) and write its mask decoder (codebook and "
        "decoder.* weights, same key names) as a safetensors file that segment's vae= option accepts.",
    )
    convert.add_argument("npz", help="vae-oid.npz: a local path or hf://owner/repo/file.npz")
    convert.add_argument("output", help="the .safetensors file to write (replaced only once complete)")
    convert.set_defaults(run=_convert_vae)
