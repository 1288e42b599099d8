"""What an int4 output head would cost in accuracy and buy in decode speed.

``quantize="int4"`` keeps the output head (Gemma's tied embedding) in int8: the head decides every token.
This script measures that choice against the alternative, the head run by the int4 kernel (groups of
128 inputs, the built-in scheme) while the input embedding stays the int8 table:

* accuracy: the bundled shapes-demo model on its guide's evaluation set (200 new scenes, seed 1000),
  float against ``quantize="int4"`` with each head: detection precision and recall per prompt kind,
  caption accuracy, segmentation mIoU and box accuracy (the figures the tests hold within 0.02);
* speed: the mid-size model of ``generate_speed.py`` (real widths and vocabulary, 4 text layers, random
  weights), ``quantize="int4"`` with each head timed alternately, and the bytes one decode step reads
  against its float32 weights (the most any kernel could gain over float32 at the same share of the
  memory bandwidth).

    python benchmarks/int4_head.py
    python benchmarks/int4_head.py --skip-accuracy --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from torch import nn

import vlmzoo
from vlmzoo.bench import decode_weight_bytes, random_inputs, summarize, token_times
from vlmzoo.components.quantized import INT4, QuantizedEmbedding, QuantizedLinear, packed_nbytes
from vlmzoo.model.quantize import quantize_model

REPO_ROOT = Path(__file__).resolve().parent.parent


class Int4Head(nn.Module):
    """A tied embedding whose lookup stays the int8 table and whose head runs on int4 tiles."""

    def __init__(self, table: QuantizedEmbedding, weight: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        float_head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        float_head.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.head = QuantizedLinear.from_float(float_head, "int4", INT4)

    @property
    def dtype(self) -> torch.dtype:
        return self.table.dtype

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table(input_ids)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)


def with_int4_head(model, float_embedding: torch.Tensor):
    """``model`` (quantized, tied head) with its head swapped for `Int4Head`. The lookup table is kept,
    so the step reads the int4 head instead of the int8 one and the lookup reads a few int8 rows."""
    decoder = model.language_model
    decoder.embed_tokens = Int4Head(decoder.embed_tokens, float_embedding)
    return model


def accuracy() -> None:
    script = REPO_ROOT / "scripts" / "evaluate_shapes_demo.py"
    spec = importlib.util.spec_from_file_location("evaluate_shapes_demo", script)
    evaluate_shapes_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_shapes_demo)
    float_vlm = vlmzoo.load("shapes-demo")
    embedding = float_vlm.model.language_model.embed_tokens.weight
    candidates = {
        "float": float_vlm,
        "int4, int8 head": vlmzoo.load("shapes-demo", quantize="int4"),
        "int4, int4 head": vlmzoo.load("shapes-demo", quantize="int4"),
    }
    with_int4_head(candidates["int4, int4 head"].model, embedding)
    metrics = {"precision": "P", "recall": "R", "accuracy": "acc", "miou": "mIoU", "boxacc@0.5": "box"}
    print("shapes-demo, 200 new scenes (seed 1000):")
    for label, vlm in candidates.items():
        figures = evaluate_shapes_demo.evaluate(vlm, seed=1000, num_images=200)
        cells = [
            f"{kind} {short} {values[metric]:.3f}"
            for kind, values in figures.items()
            for metric, short in metrics.items()
            if metric in values
        ]
        print(f"  {label:16s} " + ", ".join(cells), flush=True)


def speed(repeats: int, new_tokens: int) -> None:
    float_model = vlmzoo.build("paligemma2-3b-224", vision={"num_layers": 4}, decoder={"num_layers": 4}, seed=0)
    float_bytes = decode_weight_bytes(float_model)
    embedding = float_model.language_model.embed_tokens.weight.detach().clone()
    models = {}
    for label in ("int4, int8 head", "int4, int4 head"):
        model = vlmzoo.build("paligemma2-3b-224", vision={"num_layers": 4}, decoder={"num_layers": 4}, seed=0)
        model = model.to(torch.bfloat16)
        quantize_model(model, "int4")
        models[label] = with_int4_head(model, embedding) if label.endswith("int4 head") else model
    del float_model
    inputs = random_inputs(models["int4, int8 head"].config, 1, 12)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    runs: dict[str, list[list[float]]] = {label: [] for label in models}
    for model in models.values():
        token_times(model, inputs, 4)  # kernel choices and first touch
    for _ in range(repeats):  # alternately, so that drift affects both alike
        for label, model in models.items():
            runs[label].append(token_times(model, inputs, new_tokens))
    threads = torch.get_num_threads()
    print(f"mid-size model, 4 text layers, batch 1, {repeats} x {new_tokens} tokens, {threads} threads:")
    for label, model in models.items():
        step_bytes = decode_weight_bytes(model)
        embedding = model.language_model.embed_tokens
        if isinstance(embedding, Int4Head):  # a step reads a few rows of the int8 lookup table at most
            step_bytes -= packed_nbytes(embedding.table)
        measured = summarize(runs[label], 1)
        print(
            f"  {label:16s} {measured.decode_tok_s:6.2f} tok/s (step {measured.step_s * 1e3:.1f} ms), "
            f"{step_bytes / 2**20:.0f} MiB per step, float32 reads {float_bytes / step_bytes:.2f}x as many"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.skip_accuracy:
        accuracy()
    if not args.skip_speed:
        speed(args.repeats, args.new_tokens)


if __name__ == "__main__":
    main()
