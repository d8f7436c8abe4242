"""Hyperparameter search on functions with known optima: optreg.hpo against Optuna 5, side by side.

Functions (minimized; ``f*`` known): Branin (2-D), Hartmann-3, Hartmann-6, Rosenbrock-4 on
``[-2.048, 2.048]^4``, a mixed function of a float, an integer and a categorical, and Styblinski-Tang-4 on
``[-5, 5]^4`` (multimodal: ``2^4`` basins, the global one at ``x_i = -2.9035``), where GPs are known to lose
to TPE. Each method runs ``n_trials`` trials per seed through its ask / tell interface in this process;
the table gives the median over seeds of the simple regret ``min_t f(x_t) - f*`` and the median time per
suggestion (the ``ask``; the functions themselves cost microseconds). Methods: optreg ``random``,
``gp-ei`` (and ``gp-ucb`` on Styblinski-Tang), ``tpe`` (multivariate, its default) and ``tpe`` with
``multivariate=False``, Optuna's
``RandomSampler``, ``TPESampler`` and ``GPSampler`` (all with their defaults, seeded). One torch thread and one
BLAS thread for everyone (``threadpool_limits(1)`` entered afresh for each run, so that it covers every BLAS
loaded by then: Optuna sets no limit of its own).
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import optuna
from threadpoolctl import threadpool_limits

from benchmarks._common import one_thread
from optreg import hpo

optuna.logging.set_verbosity(optuna.logging.WARNING)

# ------------------------------------------------------------------------------------------ the functions

_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                  [17, 8, 0.05, 10, 0.1, 14]])  # fmt: skip
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])  # fmt: skip
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_SHIFT = {"a": 0.6, "b": 0.0, "c": 1.2, "d": 0.3}


def _hartmann(a: np.ndarray, p: np.ndarray) -> Callable[[dict], float]:
    def f(x: dict) -> float:
        v = np.array([x[f"x{i}"] for i in range(a.shape[1])])
        return float(-(_H_ALPHA * np.exp(-(a * (v - p) ** 2).sum(1))).sum())

    return f


def _branin(x: dict) -> float:
    x1, x2 = x["x0"], x["x1"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def _rosenbrock(x: dict) -> float:
    v = [x[f"x{i}"] for i in range(4)]
    return sum(100 * (v[i + 1] - v[i] ** 2) ** 2 + (1 - v[i]) ** 2 for i in range(3))


def _mixed(x: dict) -> float:
    """A float, an integer and a categorical: minimum 0 at ``x = 0.3, n = 3, c = "b"``."""
    return (x["x"] - 0.3) ** 2 + 0.1 * (x["n"] - 3) ** 2 + _SHIFT[x["c"]] + 0.2 * (1 - math.cos(2 * (x["x"] - 0.3)))


def _styblinski_tang(x: dict) -> float:
    return 0.5 * sum(x[f"x{i}"] ** 4 - 16 * x[f"x{i}"] ** 2 + 5 * x[f"x{i}"] for i in range(4))


def _box(d: int, low: float, high: float) -> dict:
    return {f"x{i}": hpo.Float(low, high) for i in range(d)}


#: name -> (function, optreg space, f*)
FUNCTIONS: dict[str, tuple[Callable[[dict], float], dict, float]] = {
    "Branin": (_branin, {"x0": hpo.Float(-5.0, 10.0), "x1": hpo.Float(0.0, 15.0)}, 0.397887357729738),
    "Hartmann-3": (_hartmann(_H3_A, _H3_P), _box(3, 0.0, 1.0), -3.862779787332660),
    "Hartmann-6": (_hartmann(_H6_A, _H6_P), _box(6, 0.0, 1.0), -3.322368011391339),
    "Rosenbrock-4": (_rosenbrock, _box(4, -2.048, 2.048), 0.0),
    "mixed (float, int, categorical)": (
        _mixed,
        {"x": hpo.Float(-2.0, 2.0), "n": hpo.Int(0, 10), "c": hpo.Categorical(["a", "b", "c", "d"])},
        0.0,
    ),
    "Styblinski-Tang-4": (_styblinski_tang, _box(4, -5.0, 5.0), -39.16616570377142 * 4),
}

# ------------------------------------------------------------------------------------------ the runners


def _optuna_distributions(space: dict) -> dict:
    out = {}
    for name, d in space.items():
        if isinstance(d, hpo.Float):
            out[name] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
        elif isinstance(d, hpo.Int):
            out[name] = optuna.distributions.IntDistribution(d.low, d.high, log=d.log)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(list(d.choices))
    return out


def _run_optreg(
    method: str, f: Callable, space: dict, n_trials: int, seed: int, **options: object
) -> tuple[float, float]:
    study = hpo.Study(space, method=method, direction="minimize", n_trials=n_trials, seed=seed, **options)
    best, asks = math.inf, []
    for _ in range(n_trials):
        start = time.perf_counter()
        trial = study.ask()
        asks.append(time.perf_counter() - start)
        value = f(trial.params)
        study.tell(trial, value)
        best = min(best, value)
    return best, statistics.median(asks)


_SAMPLERS = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "TPE": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "GPSampler": lambda seed: optuna.samplers.GPSampler(seed=seed),
}


def _run_optuna(sampler: str, f: Callable, space: dict, n_trials: int, seed: int) -> tuple[float, float]:
    study = optuna.create_study(direction="minimize", sampler=_SAMPLERS[sampler](seed))
    dists = _optuna_distributions(space)
    best, asks = math.inf, []
    for _ in range(n_trials):
        start = time.perf_counter()
        trial = study.ask(fixed_distributions=dists)
        asks.append(time.perf_counter() - start)
        value = f(trial.params)
        study.tell(trial, value)
        best = min(best, value)
    return best, statistics.median(asks)


def _methods(function: str) -> list[tuple[str, Callable]]:
    def ours(m: str, **options: object) -> Callable:
        return lambda *a: _run_optreg(m, *a, **options)

    def theirs(s: str) -> Callable:
        return lambda *a: _run_optuna(s, *a)

    methods = [("optreg random", ours("random")), ("optreg gp-ei", ours("gp-ei"))]
    if function.startswith("Styblinski"):
        methods.append(("optreg gp-ucb", ours("gp-ucb")))
    methods += [("optreg tpe", ours("tpe")), ("optreg tpe univariate", ours("tpe", multivariate=False))]
    return methods + [(f"optuna {s}", theirs(s)) for s in _SAMPLERS]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b > 0 else ("1" if a == b else "inf")


#: Measured apart from this table (the same protocol on seeds 0-19, one process; see _notes): on
#: Hartmann-6 each run either reaches the global basin or stays in a local one, and which depends mostly
#: on the initial design, so 5 seeds decide the median by the count of lucky ones.
HARTMANN6_SEEDS_0_19 = (
    "Hartmann-6 over 20 seeds (0-19, measured apart from this table on 2026-12-02): gp-ei stays in a local basin "
    "(regret > 0.05; 0.12 is the local minimum -3.203) in 12 of 20 seeds with its default box-cox output "
    "transform (11 with plain standardization, 14 with the log warp), GPSampler (Optuna 5.1) in 8 of 20, so the "
    "5-seed median above is decided by how many of seeds 0-4 are lucky: it does not show gp-ei better than "
    "GPSampler on Hartmann-6, and 12 vs 8 of 20 is within about two binomial standard deviations. What failed "
    "to lower gp-ei's count (each 20 seeds): Optuna's own random initial designs fed to gp-ei's loop 7, a Latin "
    "hypercube 8, uniform random 10, startup 16 points 10 and 20 points 16, Optuna's fit (unbounded, noise "
    "1e-6 + exp, init 1, gtol 1e-2) 10, refitting from the default start too and keeping the better posterior "
    "8, length scales capped at 1 or 2: 9 and 11, 8192 raw points and 30 starts 11, gp-ucb 12. In the failing "
    "runs the length scales of x2 and x4 grow to 4-5 (flat near the local minimum), but capping them does not "
    "help: EI keeps refining the basin it found. The output transforms over seeds 0-19 (median regret, "
    "standardize -> box-cox, Welch on log10 regret): Rosenbrock-4 4.72 -> 2.65 (better beyond 2 SE), mixed "
    "1.4e-7 -> 2.5e-9 (better), Styblinski-Tang-4 32 -> 17 (better), Branin, Hartmann-3 and Hartmann-6 within "
    "noise; but on Branin 2 of 20 box-cox runs (seeds 3 and 12) stay at regret 1.55, resampling the corner "
    "(10, 3) next to the minimum while the fitted lambda falls (optreg.hpo.warp's docstring)."
)


def _verdicts(summary: dict) -> str:
    """Which of issue 11's targets hold on each function (Styblinski-Tang-4 excluded: a known GP weakness)."""
    parts = []
    for name, results in summary.items():
        if name.startswith("Styblinski"):
            continue
        regret, ask = results["optreg gp-ei"]
        gp_regret, gp_time = results["optuna GPSampler"]
        tpe = results["optuna TPE"][0]
        r, t, x = regret / gp_regret if gp_regret > 0 else math.inf, ask / gp_time, tpe / regret if regret else math.inf
        parts.append(
            f"{name}: regret {_fmt(r)}x GPSampler's ({'holds' if r <= 1 else 'does not hold'}), time "
            f"{t:.2f}x ({'holds' if t <= 0.5 else 'does not hold'}), {_fmt(x)}x better than TPE "
            f"({'holds' if x >= 10 else 'does not hold'})"
        )
    return "; ".join(parts)


def _tpe_and_time_remarks(summary: dict) -> str:
    """GPSampler's own factor over TPE where gp-ei misses 10x, and the spread of GPSampler's ask times."""
    out = []
    for name, results in summary.items():
        tpe, ours, theirs = (results[k][0] for k in ("optuna TPE", "optreg gp-ei", "optuna GPSampler"))
        if not name.startswith("Styblinski") and ours > 0 and tpe / ours < 10:
            out.append(f"On {name} GPSampler is {_fmt(tpe / theirs)}x better than TPE (gp-ei {_fmt(tpe / ours)}x).")
    times = [results["optuna GPSampler"][1] * 1e3 for results in summary.values()]
    ours = [results["optreg gp-ei"][1] * 1e3 for results in summary.values()]
    out.append(
        f"The times are the noisiest column (a shared host): GPSampler's own ms / ask ranges from "
        f"{min(times):.0f} to {max(times):.0f} over the functions of this one run, gp-ei's from "
        f"{min(ours):.0f} to {max(ours):.0f}."
    )
    batched = importlib.util.find_spec("greenlet") is not None
    out.append(
        f"GPSampler ran {'with' if batched else 'without'} greenlet, "
        + ("so it optimized its acquisition from all its starts at once (its fastest form; the dev extra installs "
           "greenlet). " if batched else "so it optimized its acquisition from one start after the other. ")
        + "Before 2026-12-02 these runs shared one outer threadpool_limits, which missed SciPy's own OpenBLAS "
        "(loaded later), and its two threads made GPSampler's L-BFGS-B 4x slower in every run after optreg's; "
        "the limit is now entered afresh for each run."
    )
    return " ".join(out) + " "


def _on_par(ours: float, theirs: float) -> str:
    """Whether ``ours`` is within a factor 2 of ``theirs`` (in words)."""
    return "it is" if 0.5 <= ours / theirs <= 2 else "it is not"


def _notes(summary: dict, n_trials: int, seeds: int) -> str:
    notes = (
        f"{n_trials} trials x {seeds} seeds per method and function; regret = min f - f*, median over seeds; "
        "ms / ask = median wall time of one suggestion (the functions cost microseconds). "
        "For optreg's GP and TPE rows: "
        "their regret over GPSampler's (< 1: better), TPE's regret over theirs (> 1: better than TPE), their "
        "time per suggestion over GPSampler's. Targets (issue 11): gp-ei's regret no worse than GPSampler's, "
        "at most half its time per suggestion, 10x better than TPE. Here: "
        + _verdicts(summary)
        + ". "
        + _tpe_and_time_remarks(summary)
        + HARTMANN6_SEEDS_0_19
    )
    st = summary.get("Styblinski-Tang-4")
    if st is not None:
        tpe, mv, theirs = st["optreg tpe univariate"], st["optreg tpe"], st["optuna TPE"]
        notes += (
            f" Styblinski-Tang-4 (multimodal, 16 basins; a coordinate in the wrong basin costs 14.1): optreg gp-ei "
            f"{_fmt(st['optreg gp-ei'][0])}, gp-ucb {_fmt(st['optreg gp-ucb'][0])}, Optuna GPSampler "
            f"{_fmt(st['optuna GPSampler'][0])}, random {_fmt(st['optreg random'][0])}; optreg's GP has one "
            "stationary length scale per dimension, which smooths over the basins. What optreg offers there is "
            f"method='tpe' (optreg.hpo.tpe, Bergstra et al. 2011): median regret {_fmt(tpe[0])} univariate and "
            f"{_fmt(mv[0])} multivariate, against Optuna TPE's {_fmt(theirs[0])} (Optuna 5's TPESampler is "
            "multivariate by default for one objective, as optreg's tpe is, so its peer is the multivariate row; "
            f"{_ratio(tpe[0], theirs[0])}x "
            f"and {_ratio(mv[0], theirs[0])}x its regret), at {tpe[1] * 1e3:.1f} and {mv[1] * 1e3:.1f} ms / ask "
            f"against its {theirs[1] * 1e3:.1f} ms ({_ratio(tpe[1], theirs[1])}x and {_ratio(mv[1], theirs[1])}x). "
            f"With {seeds} seeds a run with one more coordinate in a wrong basin moves the median by about 14, "
            f"so a factor under 2 either way ({_on_par(mv[0], theirs[0])} here for the multivariate model) is "
            "within the seed spread."
        )
    return notes


def _run(quick: bool) -> dict:
    n_trials, seeds = (25, 2) if quick else (50, 5)
    names = list(FUNCTIONS)
    rows, summary = [], {}
    for name in names:
        f, space, f_star = FUNCTIONS[name]
        results: dict[str, tuple[float, float]] = {}
        for label, runner in _methods(name):
            regrets, times = [], []
            for seed in range(seeds):
                # BLAS on one thread for every library, looked up again for each run: a library loaded by an
                # earlier run (SciPy's own OpenBLAS, at the first L-BFGS-B) would otherwise keep all cores,
                # and its threads made Optuna's L-BFGS-B 4x slower in whichever run came after optreg's
                with threadpool_limits(1):
                    best, ask = runner(f, space, n_trials, seed)
                regrets.append(best - f_star)
                times.append(ask)
            results[label] = (statistics.median(regrets), statistics.median(times))
        gp_regret, gp_time = results["optuna GPSampler"]
        tpe_regret = results["optuna TPE"][0]
        for label, (regret, ask) in results.items():
            ours = label.startswith(("optreg gp", "optreg tpe"))
            rows.append([
                name, label, _fmt(regret), f"{ask * 1e3:.1f}",
                _ratio(regret, gp_regret) if ours else "", _ratio(tpe_regret, regret) if ours else "",
                f"{ask / gp_time:.2f}" if label.startswith("optreg gp") else "",
            ])  # fmt: skip
        summary[name] = results
    notes = _notes(summary, n_trials, seeds)
    return {
        "title": "Hyperparameter search: simple regret and time per suggestion (optreg.hpo vs Optuna 5)",
        "columns": [
            "function",
            "method",
            "median regret",
            "ms / ask",
            "regret / GPSampler's",
            "TPE's regret / this",
            "ask time / GPSampler's",
        ],
        "rows": rows,
        "notes": notes,
    }


run = one_thread(_run)


if __name__ == "__main__":
    import sys

    section = run(quick="--quick" in sys.argv)
    print(" | ".join(section["columns"]))
    for row in section["rows"]:
        print(" | ".join(str(c) for c in row))
    print(section["notes"])
