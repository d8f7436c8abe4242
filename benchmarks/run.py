"""Runs every ``benchmarks/bench_*.py`` and writes the tables to BENCHMARKS.md.

``python -m benchmarks.run [--quick] [--only NAME ...] [--out BENCHMARKS.md]``

With ``--only`` the named benchmarks' sections replace their old ones in the existing file (matched by title)
and every other section is kept as it was: a partial run never loses the others' figures. Each section says
the date and mode it was measured in.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

import benchmarks


def _markdown(section: dict, seconds: float, stamp: str = "") -> str:
    cols = section["columns"]
    lines = [f"## {section['title']}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in section["rows"]]
    lines += ["", section.get("notes", ""), "", f"(ran in {seconds:.0f} s{stamp})", ""]
    return "\n".join(lines)


def _sections(text: str) -> tuple[list[str], list[str]]:
    """Split a BENCHMARKS.md into its header lines and its ``## `` sections (each a block of text)."""
    header, blocks = [], []
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            header.append(line)
    return header, ["\n".join(b) for b in blocks]


def _merge(old: list[str], new: list[str]) -> list[str]:
    """``old`` sections with those of the same title replaced by ``new``'s; new titles appended."""
    title = lambda block: block.splitlines()[0]  # noqa: E731
    fresh = {title(b): b for b in new}
    out = [fresh.pop(title(b), b) for b in old]
    return out + [b for b in new if title(b) in fresh]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and cases")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark module names (e.g. bench_optim)")
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only]
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`). Each benchmark runs optreg and its peer side by side "
        "in one process; ratios are optreg / peer (lower is better for times).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}; "
        f"{datetime.date.today().isoformat()}{' (quick mode)' if args.quick else ''}.",
        "",
    ]
    sections = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        section = module.run(quick=args.quick)
        stamp = f", {datetime.date.today().isoformat()}{', quick mode' if args.quick else ''}"
        sections.append(_markdown(section, time.perf_counter() - t0, stamp))
        print(sections[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    if args.only and out.exists():  # keep the sections of the benchmarks not rerun
        _, old = _sections(out.read_text())
        sections = _merge(old, sections)
    sections = [s.rstrip("\n") + "\n" for s in sections]  # one blank line between sections, however often rerun
    out.write_text("\n".join(header + sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
