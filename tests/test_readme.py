"""The README's Python examples run as written (oracle: they execute, and training moves the loss)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    y = (x[:, :10].argmax(1)).long()  # a learnable rule, so the loss must fall
    namespace = {"batches": [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    first = namespace["opt"]
    assert first.state and first.param_groups[0]["lr"] == namespace["schedule"](len(namespace["batches"]) - 1)
    for block in blocks[1:]:
        exec(compile(block, str(README), "exec"), namespace)
    model, opt = namespace["model"], namespace["opt"]
    assert isinstance(opt, torch.optim.Optimizer) and opt is not first

    def loss() -> float:
        return torch.nn.functional.cross_entropy(model(x), y).item()

    before = loss()
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert loss() < before
