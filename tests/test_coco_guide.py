"""The COCO guide runs as written: its data-making Python, then its convert, train and eval commands."""

from __future__ import annotations

import json
import re
import shlex

from docs_examples import REPO_ROOT

from vlmzoo.cli import main

GUIDE = REPO_ROOT / "docs" / "guides" / "coco.md"
_BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_guide_converts_trains_and_evaluates_offline(tmp_path, monkeypatch, capsys, single_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLMZOO_QUIET", "1")
    blocks = _BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    exec(blocks[0][1], {"__name__": "__guide__"})  # the tiny COCO datasets
    commands = [
        shlex.split(line)[1:]
        for kind, code in blocks
        if kind == "bash"
        for line in code.replace("\\\n", " ").splitlines()
    ]
    assert [c[0] for c in commands] == ["data", "train", "eval"]
    for command in commands:
        assert main(command) == 0, command
    printed = capsys.readouterr().out
    assert "wrote 64 records" in printed
    table = printed[printed.index("class ") :].splitlines()
    assert [line.split()[0] for line in table[2:6]] == ["circle", "square", "triangle", "all"]
    assert float(table[5].split()[1]) > 0.5  # the fine-tuned demo model still finds unseen shapes
    results = json.loads((tmp_path / "shapes-val" / "results.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 25)) and all("score" in r for r in results)
    metrics = [json.loads(line) for line in (tmp_path / "shapes-run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for m in metrics if "loss" in m) == 8
