"""The output transforms of optreg's gp-ei (``output_transform=``, optreg.hpo.warp) on bench_hpo's functions,
with Optuna's TPESampler and GPSampler on the same seeds: the evidence for the default.

    python -m benchmarks.sweep_output_transform OUT.jsonl --seeds 0-4 [--functions Rosenbrock,mixed,...]
        [--methods standardize,log,yeo-johnson,rank,TPE,GPSampler]

A method is a transform of gp-ei (``log@0.01``: with a knob, see ``sweep``), ``gp-ucb/box-cox`` a transform
of another GP method, or an Optuna sampler. One JSON line per (function, method, seed) with the simple
regret ``min f - f*`` after ``--trials`` trials (default 50); lines already in OUT are skipped, so a run can
be resumed. ``--summary`` prints the median regret per function and method from OUT, the per-seed regrets,
and whether a transform's mean log10 regret differs from standardize's beyond 2 Welch standard errors
(optreg.experiments.base.exceeds). One torch and one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

import torch
from threadpoolctl import threadpool_limits

from benchmarks.bench_hpo import FUNCTIONS, _run_optreg, _run_optuna
from optreg.experiments.base import exceeds
from optreg.hpo import warp

_LOG_OFFSET = warp.LOG_OFFSET
TRANSFORMS = ("standardize", "log", "yeo-johnson", "box-cox", "rank")
OPTUNA = ("TPE", "GPSampler")


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _done(path: str) -> set[tuple[str, str, int]]:
    if not os.path.exists(path):
        return set()
    with open(path) as fh:
        return {(r["function"], r["method"], r["seed"]) for r in map(json.loads, fh)}


def sweep(path: str, functions: list[str], methods: list[str], seeds: list[int], n_trials: int) -> None:
    done = _done(path)
    for name in functions:
        f, space, f_star = FUNCTIONS[name]
        for method in methods:
            for seed in seeds:
                if (name, method, seed) in done:
                    continue
                if method in OPTUNA:
                    best, _ = _run_optuna(method, f, space, n_trials, seed)
                else:  # "log@0.01": the log warp with c = 0.01 (median - min); "box-cox@-1:1": -1 <= lambda <= 1
                    kind, _, knob = method.partition("@")
                    warp.LOG_OFFSET = float(knob) if knob and kind == "log" else _LOG_OFFSET
                    lo, _, hi = (knob if knob and kind == "box-cox" else "-inf:inf").partition(":")  # "box-cox@-1:1"
                    warp.BOX_COX_LAMBDA_BOUNDS = (float(lo or "-inf"), float(hi or "inf"))
                    gp_method, _, kind = kind.rpartition("/")  # "gp-ucb/box-cox": another GP method
                    best, _ = _run_optreg(gp_method or "gp-ei", f, space, n_trials, seed, output_transform=kind)
                with open(path, "a") as fh:
                    fh.write(json.dumps({"function": name, "method": method, "seed": seed,
                                         "regret": best - f_star}) + "\n")  # fmt: skip
                print(name, method, seed, f"{best - f_star:.4g}", flush=True)


def summary(path: str) -> None:
    rows: dict[tuple[str, str], dict[int, float]] = {}
    with open(path) as fh:
        for r in map(json.loads, fh):
            rows.setdefault((r["function"], r["method"]), {})[r["seed"]] = r["regret"]
    for (name, method), by_seed in rows.items():
        seeds = sorted(by_seed)
        regrets = [by_seed[s] for s in seeds]
        versus = ""
        plain = method.rpartition("/")[0] + "/standardize" if "/" in method else "standardize"
        base = rows.get((name, plain), {})
        common = [s for s in seeds if s in base]
        if method != plain and len(common) > 1:
            # Welch on log10 regret (regrets span decades): better / worse than standardize beyond 2 SE
            a = [math.log10(max(by_seed[s], 1e-12)) for s in common]
            b = [math.log10(max(base[s], 1e-12)) for s in common]
            verdict = "better" if exceeds(b, a).holds else "worse" if exceeds(a, b).holds else "within noise"
            versus = f" | vs {plain} (log10 regret, Welch 2 SE, {len(common)} seeds): {verdict}, {exceeds(b, a).text}"
        print(f"{name} | {method} | seeds {seeds[0]}-{seeds[-1]} (n={len(seeds)}) | median "
              f"{statistics.median(regrets):.3g}{versus} | " + " ".join(f"{r:.3g}" for r in regrets))  # fmt: skip


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--functions", default="", help="prefixes of bench_hpo's function names, comma-separated")
    p.add_argument("--methods", default=",".join(TRANSFORMS + OPTUNA))
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--summary", action="store_true")
    a = p.parse_args(argv)
    if a.summary:
        summary(a.out)
        return
    torch.set_num_threads(1)
    with threadpool_limits(1):
        names = [n for n in FUNCTIONS if not a.functions or any(n.startswith(p) for p in a.functions.split(","))]
        sweep(a.out, names, a.methods.split(","), _seeds(a.seeds), a.trials)


if __name__ == "__main__":
    main(sys.argv[1:])
