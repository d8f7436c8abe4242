"""benchmarks/run.py: a partial run (``--only``) replaces its own sections and keeps every other one."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import run as bench_run  # noqa: E402


def test_merge_replaces_by_title_and_keeps_the_rest():
    header, old = bench_run._sections("# Benchmarks\n\nmachine\n## A\nold a\n\n## B\nold b\n")
    assert header == ["# Benchmarks", "", "machine"]
    assert [s.splitlines()[0] for s in old] == ["## A", "## B"]
    merged = bench_run._merge(old, ["## B\nnew b", "## C\nnew c"])
    assert merged == ["## A\nold a\n", "## B\nnew b", "## C\nnew c"]


def test_only_keeps_the_other_sections_on_disk(tmp_path, monkeypatch):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nold header\n## Kept section\nkept numbers\n\n## Fake\nold fake\n")

    class Fake:
        @staticmethod
        def run(quick: bool = False) -> dict:
            return {"title": "Fake", "columns": ["case", "ratio"], "rows": [["x", "1.00"]]}

    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", Fake)
    monkeypatch.setattr(bench_run.pkgutil, "iter_modules", lambda path: [type("M", (), {"name": "bench_fake"})])
    assert bench_run.main(["--only", "bench_fake", "--out", str(out)]) == 0
    text = out.read_text()
    assert "kept numbers" in text and "old fake" not in text and "| x | 1.00 |" in text
    assert "kept numbers\n\n## Fake" in text  # one blank line between sections
    assert bench_run.main(["--only", "bench_fake", "--out", str(out)]) == 0
    again = out.read_text()
    assert again == text  # a rerun adds no blank lines (they used to pile up before every kept section)
