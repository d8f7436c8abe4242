"""Tests for optreg.schedules.

Oracles: torch.optim.lr_scheduler (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR,
LambdaLR, ReduceLROnPlateau) driving a dummy torch.optim.SGD, and the chapter's closed forms
(eqs. 7.5-7.7, alpha_0 / sqrt(t) of 7.2.3.3, file 002's linear decay) evaluated with NumPy.
"""

from __future__ import annotations

import doctest
import json
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tls

from optreg import schedules as S
from optreg.errors import OptregTypeError, OptregValueError

N_STEPS = 200
REL = 1e-12


def _sgd(lr: float) -> torch.optim.SGD:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def torch_lrs(make: Callable[[torch.optim.Optimizer], object], lr: float, n: int = N_STEPS) -> list[float]:
    """group['lr'] seen by the optimizer at steps 0..n-1 when a torch scheduler drives it."""
    opt = _sgd(lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()  # type: ignore[attr-defined]
    return out


def assert_matches(ours: Callable[[int], float], expected: list[float] | np.ndarray, start: int = 0) -> None:
    got = [ours(t) for t in range(start, start + len(expected))]
    np.testing.assert_allclose(got, expected, rtol=REL, atol=0.0)


# --- parity with torch.optim.lr_scheduler ----------------------------------------------------------------


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.1), (7, 0.5), (30, 0.9), (250, 0.1)])
def test_step_decay_matches_torch_steplr(step_size: int, gamma: float) -> None:
    expected = torch_lrs(lambda o: tls.StepLR(o, step_size=step_size, gamma=gamma), 0.3)
    assert_matches(S.step_decay(0.3, step_size, gamma), expected)


@pytest.mark.parametrize(("milestones", "gamma"), [([1], 0.5), ([30, 80, 150], 0.1), ((5, 6, 7, 199), 0.7)])
def test_multistep_matches_torch_multisteplr(milestones: list[int], gamma: float) -> None:
    expected = torch_lrs(lambda o: tls.MultiStepLR(o, milestones=list(milestones), gamma=gamma), 0.05)
    assert_matches(S.multistep(0.05, milestones, gamma), expected)


@pytest.mark.parametrize("beta", [0.96, 0.5, 0.999, 1.0])
def test_exponential_matches_torch_exponentiallr(beta: float) -> None:
    expected = torch_lrs(lambda o: tls.ExponentialLR(o, gamma=beta), 0.1)
    assert_matches(S.exponential(0.1, beta), expected)


@pytest.mark.parametrize(("total", "min_lr"), [(200, 0.0), (150, 1e-3), (37, 0.01), (1, 0.0)])
def test_cosine_matches_torch_cosineannealinglr_then_stays_at_min_lr(total: int, min_lr: float) -> None:
    expected = torch_lrs(lambda o: tls.CosineAnnealingLR(o, T_max=total, eta_min=min_lr), 0.1, n=total + 1)
    ours = S.cosine(0.1, total, min_lr)
    assert_matches(ours, expected)
    assert ours(total) == min_lr
    # after total_steps torch's rate climbs back along the cosine; ours stays at the floor
    assert [ours(t) for t in range(total, total + 50)] == [min_lr] * 50


@pytest.mark.parametrize(("n", "factor"), [(1, 0.5), (10, 0.1), (50, 1 / 3), (199, 0.01)])
def test_warmup_of_constant_matches_torch_linearlr(n: int, factor: float) -> None:
    lr = 0.2
    expected = torch_lrs(lambda o: tls.LinearLR(o, start_factor=factor, end_factor=1.0, total_iters=n), lr)
    assert_matches(S.warmup(S.constant(lr), n, start_lr=factor * lr), expected)


@pytest.mark.parametrize(("final", "tau"), [(1e-3, 150), (0.0, 20), (0.1, 10), (0.05, 300)])
def test_linear_to_floor_matches_torch_linearlr(final: float, tau: int) -> None:
    lr = 0.1
    expected = torch_lrs(
        lambda o: tls.LinearLR(o, start_factor=1.0, end_factor=final / lr, total_iters=tau), lr
    )
    assert_matches(S.linear_to_floor(lr, final, tau), expected)


MULTIPLIER_CASES = [
    S.exponential(0.1, 0.97),
    S.cosine(0.3, 120, 0.003),
    S.warmup(S.inverse_time(0.05, 0.1), 15, start_lr=0.005),
    S.multistep(1.0, [10, 100]),
]


@pytest.mark.parametrize("schedule", MULTIPLIER_CASES, ids=repr)
def test_as_multiplier_drives_torch_lambdalr(schedule: Callable[[int], float]) -> None:
    """torch LambdaLR with base_lr = schedule(0) reproduces the schedule; another base_lr scales it."""
    expected = torch_lrs(lambda o: tls.LambdaLR(o, S.as_multiplier(schedule)), schedule(0))
    assert_matches(schedule, expected)
    scaled = torch_lrs(lambda o: tls.LambdaLR(o, S.as_multiplier(schedule)), 2.0 * schedule(0), n=50)
    np.testing.assert_allclose(scaled, [2.0 * schedule(t) for t in range(50)], rtol=REL)


SCHEDULE_LR_CASES = [
    *MULTIPLIER_CASES,
    S.warmup(S.cosine(1e-3, total_steps=100), warmup_steps=10),  # the README's, schedule(0) = 0
    S.warmup(S.exponential(0.2, 0.9), 5, start_lr=0.0),
    S.per_epoch(S.step_decay(0.5, 1, 0.1), 7),
]


@pytest.mark.parametrize("schedule", SCHEDULE_LR_CASES, ids=repr)
@pytest.mark.parametrize("opt_lr", [0.123, 1.0])
def test_schedule_lr_equals_a_manual_loop_setting_the_lr(schedule: Callable[[int], float], opt_lr: float) -> None:
    """Oracle: the manual loop ``group["lr"] = schedule(step)`` before each update, on two param groups,
    whatever lr the optimizer was built with (SGD with momentum: the parameters agree bit for bit)."""

    def params():
        return [torch.ones(3, requires_grad=True), torch.full((2,), -1.0, requires_grad=True)]

    def loss(ps):
        return sum((p**2).sum() for p in ps)

    mine, manual = params(), params()
    opt = torch.optim.SGD([{"params": mine[:1]}, {"params": mine[1:]}], lr=opt_lr, momentum=0.9)
    sched = S.ScheduleLR(opt, schedule)
    ref = torch.optim.SGD([{"params": manual[:1]}, {"params": manual[1:]}], lr=opt_lr, momentum=0.9)
    seen = []
    for step in range(60):
        for group in ref.param_groups:
            group["lr"] = schedule(step)
        seen.append([g["lr"] for g in opt.param_groups])
        opt.zero_grad()
        ref.zero_grad()
        loss(mine).backward()
        loss(manual).backward()
        opt.step()
        ref.step()
        sched.step()
    assert seen == [[schedule(t)] * 2 for t in range(60)]
    assert all(torch.equal(a, b) for a, b in zip(mine, manual))


def test_schedule_lr_resumes_from_its_state_dict() -> None:
    """torch's state_dict round trip (pickled): a resumed ScheduleLR continues with the same rates."""
    s = S.warmup(S.cosine(0.1, 80), 20)
    opt = _sgd(0.5)
    sched = S.ScheduleLR(opt, s)
    for _ in range(30):
        opt.step()
        sched.step()
    state = pickle.loads(pickle.dumps(sched.state_dict()))
    opt2 = _sgd(0.5)
    sched2 = S.ScheduleLR(opt2, S.constant(1.0))
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for t in range(30, 60):
        assert opt2.param_groups[0]["lr"] == s(t) == opt.param_groups[0]["lr"]
        opt.step(), sched.step(), opt2.step(), sched2.step()


def test_as_multiplier_with_base_lr_handles_a_warmup_from_zero() -> None:
    """LambdaLR multiplies the optimizer's lr by the multiplier: with base_lr = that lr, the rates are the
    schedule's (oracle: the schedule itself), also for a warm-up whose schedule(0) = 0."""
    s = S.warmup(S.cosine(0.1, 80), 20)
    expected = torch_lrs(lambda o: tls.LambdaLR(o, S.as_multiplier(s, base_lr=0.3)), 0.3, n=100)
    assert_matches(s, expected)
    with pytest.raises(OptregValueError, match="give base_lr"):
        S.as_multiplier(s)


def test_as_multiplier_survives_torch_lambdalr_state_dict() -> None:
    """LambdaLR.state_dict stores a callable object's __dict__: a resumed LambdaLR continues like torch's."""
    s = S.warmup(S.cosine(0.1, 80), 20, start_lr=0.01)
    opt = _sgd(s(0))
    sched = tls.LambdaLR(opt, S.as_multiplier(s))
    for _ in range(40):
        opt.step()
        sched.step()
    state = pickle.loads(pickle.dumps(sched.state_dict()))
    opt2 = _sgd(s(0))
    sched2 = tls.LambdaLR(opt2, S.as_multiplier(S.constant(1.0)))
    sched2.load_state_dict(state)
    assert sched2.lr_lambdas[0] == S.as_multiplier(s)
    for _ in range(60):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# --- ReduceOnPlateau versus torch ReduceLROnPlateau -------------------------------------------------------


def plateau_metrics(seed: int, n: int = N_STEPS, sign: float = 1.0) -> list[float]:
    """A noisy loss that improves, plateaus, jumps and repeats values (exact ties test the strict '<')."""
    rng = np.random.default_rng(seed)
    base = np.concatenate(
        [np.linspace(2.0, 1.0, n // 4), np.full(n // 4, 1.0), np.linspace(1.0, 0.5, n - n // 2)]
    )
    noise = rng.normal(0.0, 0.02, n) * (rng.random(n) < 0.6)
    values = np.round(base + noise, 3)  # rounding makes ties and near-threshold moves frequent
    return [sign * float(v) for v in values]


PLATEAU_SETTINGS = [
    dict(mode="min", threshold_mode="rel", factor=0.5, patience=3, threshold=1e-2, cooldown=2, min_lr=1e-3),
    dict(mode="min", threshold_mode="abs", factor=0.3, patience=5, threshold=5e-3, cooldown=0, min_lr=0.0),
    dict(mode="max", threshold_mode="rel", factor=0.5, patience=2, threshold=1e-3, cooldown=4, min_lr=2e-3),
    dict(mode="max", threshold_mode="abs", factor=0.1, patience=4, threshold=1e-2, cooldown=1, min_lr=1e-4),
    dict(
        mode="min",
        threshold_mode="rel",
        factor=0.9,
        patience=0,
        threshold=0,
        cooldown=0,
        min_lr=0.01,
        eps=6e-3,  # 0.1 -> 0.09 -> ... -> 0.059049, then a cut of 0.0059 <= eps is ignored (as in torch)
    ),
]


def _torch_plateau(lr: float, kw: dict) -> tuple[torch.optim.SGD, tls.ReduceLROnPlateau]:
    opt = _sgd(lr)
    return opt, tls.ReduceLROnPlateau(opt, **kw)


def _assert_same_plateau_run(lr: float, kw: dict, metrics: list[float]) -> None:
    opt, ref = _torch_plateau(lr, kw)
    ours = S.ReduceOnPlateau(lr, **kw)
    for m in metrics:
        got = ours.step(m)
        ref.step(m)
        expected = opt.param_groups[0]["lr"]
        assert got == pytest.approx(expected, rel=REL, abs=0.0)
        assert ours.lr == got
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == (
            ref.best,
            ref.num_bad_epochs,
            ref.cooldown_counter,
        )


@pytest.mark.parametrize("kw", PLATEAU_SETTINGS, ids=lambda kw: f"{kw['mode']}-{kw['threshold_mode']}")
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_on_plateau_matches_torch_reducelronplateau(kw: dict, seed: int) -> None:
    sign = 1.0 if kw["mode"] == "min" else -1.0
    metrics = plateau_metrics(seed, sign=sign)
    _assert_same_plateau_run(0.1, kw, metrics)
    opt, ref = _torch_plateau(0.1, kw)
    for m in metrics:
        ref.step(m)
    assert opt.param_groups[0]["lr"] < 0.1  # the sequence really does trigger reductions


@settings(max_examples=40, deadline=None)
@given(
    metrics=st.lists(st.sampled_from([0.0, 1.0, 0.999, 1.001, -2.0, 3.5, 1e-9, math.nan]), max_size=60),
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    factor=st.floats(0.05, 0.95),
    patience=st.integers(0, 4),
    threshold=st.sampled_from([0.0, 1e-4, 1e-3, 0.5]),
    cooldown=st.integers(0, 3),
    min_lr=st.sampled_from([0.0, 1e-3, 0.05]),
    eps=st.sampled_from([1e-8, 0.02, 0.06]),
)
def test_reduce_on_plateau_matches_torch_for_any_metric_sequence(
    metrics: list[float],
    mode: str,
    threshold_mode: str,
    factor: float,
    patience: int,
    threshold: float,
    cooldown: int,
    min_lr: float,
    eps: float,
) -> None:
    """Differential test against torch ReduceLROnPlateau (NaN metrics, cuts smaller than eps)."""
    kw = dict(mode=mode, threshold_mode=threshold_mode, factor=factor, patience=patience)
    kw.update(threshold=threshold, cooldown=cooldown, min_lr=min_lr, eps=eps)
    _assert_same_plateau_run(0.1, kw, metrics)


@pytest.mark.parametrize("kw", PLATEAU_SETTINGS[:4], ids=lambda kw: f"{kw['mode']}-{kw['threshold_mode']}")
def test_reduce_on_plateau_state_dict_resume_continues_identically(kw: dict) -> None:
    """Uninterrupted run == run stopped at step 97, saved as JSON, loaded into a fresh instance, resumed."""
    metrics = plateau_metrics(3, sign=1.0 if kw["mode"] == "min" else -1.0)
    full = S.ReduceOnPlateau(0.1, **kw)
    lrs_full = [full.step(m) for m in metrics]

    first = S.ReduceOnPlateau(0.1, **kw)
    lrs = [first.step(m) for m in metrics[:97]]
    state = first.state_dict()
    assert all(type(v) in (int, float) for v in state.values())
    resumed = S.ReduceOnPlateau(0.1, **kw)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert resumed.state_dict() == state
    lrs += [resumed.step(m) for m in metrics[97:]]
    assert lrs == lrs_full
    assert resumed.state_dict() == full.state_dict()
    assert len(set(lrs_full)) > 1


def test_reduce_on_plateau_accepts_tensor_metric_like_torch() -> None:
    ours = S.ReduceOnPlateau(0.1, patience=0)
    opt, ref = _torch_plateau(0.1, dict(patience=0))
    for m in [torch.tensor(1.0), torch.tensor(2.0), np.float64(3.0)]:
        ref.step(m)
        assert ours.step(m) == opt.param_groups[0]["lr"]
    assert ours.lr == pytest.approx(1e-3, rel=REL)


# --- the chapter's closed forms ------------------------------------------------------------------------

T = np.arange(2000)


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.5, 3.0])
def test_inverse_time_is_eq_7_5(beta: float) -> None:
    assert_matches(S.inverse_time(0.2, beta), 0.2 / (1.0 + beta * T))


@pytest.mark.parametrize("beta", [0.96, 0.5, 0.9999, 1.0])
def test_exponential_is_eq_7_6(beta: float) -> None:
    assert_matches(S.exponential(0.2, beta), 0.2 * np.power(beta, T.astype(float)))
    assert S.exponential(0.2) == S.exponential(0.2, 0.96)  # the chapter's usual beta


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.3])
def test_natural_exponential_is_eq_7_7(beta: float) -> None:
    assert_matches(S.natural_exponential(0.2, beta), 0.2 * np.exp(-beta * T))


def test_inverse_sqrt_is_alpha0_over_sqrt_t_of_7_2_3_3() -> None:
    s = S.inverse_sqrt(0.01)
    assert s(0) == 0.01  # defined as alpha_0 at t = 0
    assert_matches(s, 0.01 / np.sqrt(T[1:]), start=1)


@pytest.mark.parametrize("w", [1, 4, 100])
def test_inverse_sqrt_with_warmup_holds_then_decays_as_rsqrt(w: int) -> None:
    """Vaswani et al.'s rsqrt: alpha_0 for t <= w, then alpha_0 sqrt(w) / sqrt(t), continuous at w."""
    expected = np.where(T <= w, 0.01, 0.01 * np.sqrt(w) / np.sqrt(np.maximum(T, 1)))
    assert_matches(S.inverse_sqrt(0.01, warmup=w), expected)


@pytest.mark.parametrize(
    ("lr", "final", "tau"), [(0.1, 0.001, 100), (1.0, 0.0, 7), (0.3, 0.3, 5), (0.5, 0.2, 1)]
)
def test_linear_to_floor_is_file_002_formula_with_constant_tail(lr: float, final: float, tau: int) -> None:
    a = np.minimum(T / tau, 1.0)
    expected = (1.0 - a) * lr + a * final
    assert_matches(S.linear_to_floor(lr, final, tau), expected)
    assert S.linear_to_floor(lr, final, tau)(tau + 10**6) == final


def test_cosine_is_torch_closed_form() -> None:
    """torch CosineAnnealingLR's documented closed form eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2."""
    t = np.arange(501)
    assert_matches(S.cosine(0.4, 500, 0.01), 0.01 + 0.39 * (1 + np.cos(np.pi * t / 500)) / 2)


@pytest.mark.parametrize(
    "inner",
    [S.exponential(0.1, 0.9), S.step_decay(0.2, 10), S.inverse_sqrt(0.05, 3)],
    ids=repr,
)
@pytest.mark.parametrize(("n", "start"), [(10, 0.0), (3, 0.01), (0, 0.0)])
def test_warmup_joins_a_linear_ramp_to_a_schedule_without_a_length(
    inner: Callable[[int], float], n: int, start: float
) -> None:
    """Closed form: the ramp start + (s(0) - start) t / n, then the schedule started after it."""
    s = S.warmup(inner, n, start_lr=start)
    ramp = start + (inner(0) - start) * np.arange(n) / max(n, 1)
    assert_matches(s, ramp)
    assert_matches(s, [inner(t) for t in range(100)], start=n)
    assert s(n) == inner(0)  # the join is continuous


@pytest.mark.parametrize(
    ("inner", "shortened"),
    [
        (S.cosine(0.1, 50, 1e-3), lambda n: S.cosine(0.1, 50 - n, 1e-3)),
        (S.linear_to_floor(0.1, 0.002, 40), lambda n: S.linear_to_floor(0.1, 0.002, 40 - n)),
    ],
    ids=["cosine", "linear_to_floor"],
)
@pytest.mark.parametrize("n", [1, 10, 39])
def test_warmup_counts_inside_a_schedules_length(inner, shortened, n: int) -> None:
    """The warm-up counts inside total_steps / decay_steps (Hugging Face's get_cosine_schedule_with_warmup,
    optax's warmup_cosine_decay_schedule): the ramp, then the schedule over the remaining steps, at its
    floor from the original length on. Oracle: the closed form of cosine with warm-up,
    min + (lr - min)(1 + cos(pi (t - n) / (T - n))) / 2."""
    s = S.warmup(inner, n)
    assert_matches(s, 0.1 * np.arange(n) / n)
    assert_matches(s, [shortened(n)(t) for t in range(60)], start=n)
    length = 50 if isinstance(inner, S.Cosine) else 40
    assert s(length) == s(length + 1000) == inner(length)
    if isinstance(inner, S.Cosine):
        t = np.arange(n, 51)
        assert_matches(s, 1e-3 + (0.1 - 1e-3) * (1 + np.cos(np.pi * (t - n) / (50 - n))) / 2, start=n)
    with pytest.raises(OptregValueError, match="warmup: warmup_steps must be < the schedule's"):
        S.warmup(inner, length)


def test_per_epoch_changes_once_per_epoch_as_in_file_003() -> None:
    """File 003: divide the rate by 10 after every epoch, with an iteration counter and 25 steps per epoch."""
    s = S.per_epoch(S.step_decay(0.5, 1, 0.1), 25)
    expected = 0.5 * 0.1 ** (T[:200] // 25).astype(float)
    assert_matches(s, expected)


def test_module_doctests() -> None:
    result = doctest.testmod(S, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2
    assert result.failed == 0


# --- properties (hypothesis) ---------------------------------------------------------------------------

lrs = st.floats(1e-6, 10.0)


@st.composite
def decays(draw: st.DrawFn) -> tuple[Callable[[int], float], float, float]:
    """(schedule, floor, last step before which the rate must be > 0)."""
    lr = draw(lrs)
    kind = draw(st.sampled_from(["step", "multi", "exp", "natexp", "invtime", "invsqrt", "linear", "cosine"]))
    inf = math.inf
    if kind == "step":
        return S.step_decay(lr, draw(st.integers(1, 50)), draw(st.floats(0.5, 1.0))), 0.0, inf
    if kind == "multi":
        ms = sorted(draw(st.sets(st.integers(1, 3000), min_size=1, max_size=8)))
        return S.multistep(lr, ms, draw(st.floats(0.5, 1.0))), 0.0, inf
    if kind == "exp":
        return S.exponential(lr, draw(st.floats(0.5, 1.0))), 0.0, inf
    if kind == "natexp":
        return S.natural_exponential(lr, draw(st.floats(0.0, 0.1))), 0.0, inf
    if kind == "invtime":
        return S.inverse_time(lr, draw(st.floats(0.0, 100.0))), 0.0, inf
    if kind == "invsqrt":
        return S.inverse_sqrt(lr, draw(st.integers(1, 500))), 0.0, inf
    floor = lr * draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))
    steps = draw(st.integers(1, 600))
    if kind == "linear":
        return S.linear_to_floor(lr, floor, steps), floor, inf if floor > 0 else steps
    return S.cosine(lr, steps, floor), floor, inf if floor > 0 else steps


@settings(max_examples=150, deadline=None)
@given(case=decays(), t0=st.integers(0, 600))  # t <= 660 keeps lr * 0.5**t clear of underflow
def test_decays_are_non_increasing_and_stay_above_their_floor(
    case: tuple[Callable[[int], float], float, float], t0: int
) -> None:
    s, floor, positive_until = case
    values = [s(t) for t in range(t0, t0 + 60)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert all(v >= floor for v in values)
    assert all(v > 0 for t, v in zip(range(t0, t0 + 60), values) if t < positive_until)
    assert s(0) == s.lr  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(lr=lrs, n=st.integers(1, 200), frac=st.floats(0.0, 1.0), t=st.integers(0, 400))
def test_warmup_ramp_is_non_decreasing_and_between_start_and_peak(
    lr: float, n: int, frac: float, t: int
) -> None:
    s = S.warmup(S.cosine(lr, 300), n, start_lr=frac * lr)
    if t + 1 <= n:
        assert frac * lr <= s(t) <= s(t + 1) <= lr
    assert s(t) > 0 or (t == 0 and frac == 0.0) or t >= 300


@settings(max_examples=60, deadline=None)
@given(
    metrics=st.lists(st.floats(-1e6, 1e6), max_size=80),
    factor=st.floats(0.01, 0.99),
    min_lr=st.sampled_from([0.0, 1e-4, 1e-2]),
)
def test_reduce_on_plateau_lr_is_non_increasing_and_above_min_lr(
    metrics: list[float], factor: float, min_lr: float
) -> None:
    p = S.ReduceOnPlateau(0.1, factor=factor, patience=1, min_lr=min_lr)
    values = [0.1] + [p.step(m) for m in metrics]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert all(v >= min_lr for v in values)


# --- pickling, printing, registry ----------------------------------------------------------------------

ALL = [
    S.constant(0.1),
    S.step_decay(0.1, 5, 0.5),
    S.multistep(0.1, [3, 9]),
    S.exponential(0.1),
    S.natural_exponential(0.1, 0.05),
    S.inverse_time(0.1, 0.5),
    S.inverse_sqrt(0.1, 4),
    S.linear_to_floor(0.1, 0.001, 50),
    S.cosine(0.1, 40, 0.001),
    S.warmup(S.cosine(0.1, 40), 5, 0.01),
    S.per_epoch(S.exponential(0.1, 0.5), 10),
]


@pytest.mark.parametrize("s", ALL, ids=repr)
def test_pickle_round_trip_and_repr_round_trip(s: Callable[[int], float]) -> None:
    back = pickle.loads(pickle.dumps(s))
    assert back == s
    assert [back(t) for t in range(100)] == [s(t) for t in range(100)]
    assert eval(repr(s), vars(S)) == s  # the repr is readable Python
    assert repr(s).startswith(type(s).__name__ + "(")
    m = S.as_multiplier(s)
    assert pickle.loads(pickle.dumps(m)) == m


def test_reduce_on_plateau_pickles_mid_run() -> None:
    p = S.ReduceOnPlateau(0.1, patience=1, cooldown=1)
    metrics = plateau_metrics(5)
    for m in metrics[:80]:
        p.step(m)
    q = pickle.loads(pickle.dumps(p))
    assert [q.step(m) for m in metrics[80:]] == [p.step(m) for m in metrics[80:]]
    assert "ReduceOnPlateau(lr=" in repr(p)


def test_create_builds_every_schedule_by_name() -> None:
    assert S.available() == sorted(S.available())
    built = {
        "constant": S.create("constant", lr=0.1),
        "step_decay": S.create("step_decay", lr=0.1, step_size=5, gamma=0.5),
        "multistep": S.create("multistep", lr=0.1, milestones=[3, 9]),
        "exponential": S.create("exponential", lr=0.1),
        "natural_exponential": S.create("natural_exponential", lr=0.1, beta=0.05),
        "inverse_time": S.create("inverse_time", lr=0.1, beta=0.5),
        "inverse_sqrt": S.create("inverse_sqrt", lr=0.1, warmup=4),
        "linear_to_floor": S.create("linear_to_floor", lr=0.1, final_lr=0.001, decay_steps=50),
        "cosine": S.create("cosine", lr=0.1, total_steps=40, min_lr=0.001),
        "warmup": S.create(
            "warmup", schedule={"name": "cosine", "lr": 0.1, "total_steps": 40}, warmup_steps=5, start_lr=0.01
        ),
        "per_epoch": S.create("per_epoch", schedule=S.exponential(0.1, 0.5), steps_per_epoch=10),
    }
    assert list(built.values()) == ALL
    assert set(S.available()) == set(built) | {"reduce_on_plateau"}
    p = S.create("reduce_on_plateau", lr=0.1, mode="max", patience=2)
    assert isinstance(p, S.ReduceOnPlateau) and p.mode == "max" and p.patience == 2


def test_create_refuses_unknown_names_and_keywords_listing_what_is_allowed() -> None:
    with pytest.raises(OptregValueError, match=r"name must be one of .*'cosine'.*got 'cosin'"):
        S.create("cosin", lr=0.1)
    with pytest.raises(OptregTypeError, match=r"unknown keyword\(s\) gama; allowed: lr, step_size, gamma"):
        S.create("step_decay", lr=0.1, step_size=3, gama=0.5)
    with pytest.raises(
        OptregTypeError, match=r"needs keyword\(s\) total_steps; allowed: lr, total_steps, min_lr"
    ):
        S.create("cosine", lr=0.1)
    with pytest.raises(OptregValueError, match="needs a 'name'"):
        S.create("warmup", schedule={"lr": 0.1}, warmup_steps=3)


# --- bad input -----------------------------------------------------------------------------------------

BAD = [
    (lambda: S.constant(-0.1), r"constant: lr must be in \[0, inf\), got -0.1"),
    (lambda: S.constant(math.nan), "constant: lr must be in"),
    (lambda: S.constant("0.1"), "constant: lr must be a real number"),
    (lambda: S.constant(True), "constant: lr must be a real number"),
    (lambda: S.step_decay(0.1, 0), "step_decay: step_size must be an integer >= 1, got 0"),
    (lambda: S.step_decay(0.1, 2.5), "step_decay: step_size must be an integer >= 1"),
    (lambda: S.step_decay(0.1, 3, gamma=1.5), r"step_decay: gamma must be in \(0, 1\], got 1.5"),
    (lambda: S.step_decay(0.1, 3, gamma=0.0), r"step_decay: gamma must be in \(0, 1\]"),
    (lambda: S.multistep(0.1, []), "multistep: milestones must be a non-empty sequence"),
    (lambda: S.multistep(0.1, 5), "multistep: milestones must be a non-empty sequence"),
    (
        lambda: S.multistep(0.1, [30, 10]),
        r"multistep: milestones must be strictly increasing, got \[30, 10\]",
    ),
    (lambda: S.multistep(0.1, [10, 10]), "multistep: milestones must be strictly increasing"),
    (lambda: S.multistep(0.1, [0, 10]), "multistep: milestones must be an integer >= 1, got 0"),
    (lambda: S.multistep(0.1, [10], gamma=-0.1), r"multistep: gamma must be in \(0, 1\]"),
    (lambda: S.exponential(-1.0), "exponential: lr must be in"),
    (lambda: S.exponential(0.1, 1.01), r"exponential: beta must be in \(0, 1\], got 1.01"),
    (lambda: S.exponential(0.1, 0.0), r"exponential: beta must be in \(0, 1\], got 0.0"),
    (lambda: S.natural_exponential(0.1, -0.5), r"natural_exponential: beta must be in \[0, inf\), got -0.5"),
    (lambda: S.inverse_time(0.1, -1.0), r"inverse_time: beta must be in \[0, inf\)"),
    (lambda: S.inverse_time(0.1, math.inf), "inverse_time: beta must be in"),
    (lambda: S.inverse_sqrt(0.1, warmup=0), "inverse_sqrt: warmup must be an integer >= 1, got 0"),
    (lambda: S.linear_to_floor(0.1, 0.2, 10), r"linear_to_floor: final_lr must be in \[0, 0.1\], got 0.2"),
    (lambda: S.linear_to_floor(0.1, -0.01, 10), "linear_to_floor: final_lr must be in"),
    (lambda: S.linear_to_floor(0.1, 0.01, 0), "linear_to_floor: decay_steps must be an integer >= 1"),
    (lambda: S.cosine(0.1, 0), "cosine: total_steps must be an integer >= 1, got 0"),
    (lambda: S.cosine(0.1, 10, min_lr=0.5), r"cosine: min_lr must be in \[0, 0.1\], got 0.5"),
    (lambda: S.warmup(S.constant(0.1), -1), "warmup: warmup_steps must be an integer >= 0, got -1"),
    (lambda: S.warmup(S.constant(0.1), 5, start_lr=-1.0), "warmup: start_lr must be in"),
    (lambda: S.warmup(0.1, 5), "warmup: schedule must be a callable step -> lr"),
    (lambda: S.warmup(S.ReduceOnPlateau(0.1), 5), "ReduceOnPlateau is fed metrics"),
    (lambda: S.warmup(lambda t: -1.0, 5), r"warmup: schedule\(0\) must be in \[0, inf\)"),
    (lambda: S.per_epoch(S.constant(0.1), 0), "per_epoch: steps_per_epoch must be an integer >= 1"),
    (lambda: S.as_multiplier(S.constant(0.0)), r"as_multiplier: schedule\(0\) must be > 0"),
    (lambda: S.as_multiplier("cosine"), "as_multiplier: schedule must be a callable"),
    (lambda: S.ReduceOnPlateau(-0.1), "reduce_on_plateau: lr must be in"),
    (lambda: S.ReduceOnPlateau(0.1, mode="minimum"), "reduce_on_plateau: mode must be one of 'min', 'max'"),
    (lambda: S.ReduceOnPlateau(0.1, threshold_mode="pct"), "threshold_mode must be one of 'rel', 'abs'"),
    (lambda: S.ReduceOnPlateau(0.1, factor=1.0), r"reduce_on_plateau: factor must be in \(0, 1\), got 1.0"),
    (lambda: S.ReduceOnPlateau(0.1, factor=0.0), r"reduce_on_plateau: factor must be in \(0, 1\)"),
    (lambda: S.ReduceOnPlateau(0.1, patience=-1), "reduce_on_plateau: patience must be an integer >= 0"),
    (lambda: S.ReduceOnPlateau(0.1, cooldown=1.5), "reduce_on_plateau: cooldown must be an integer >= 0"),
    (lambda: S.ReduceOnPlateau(0.1, threshold=-1e-4), "reduce_on_plateau: threshold must be in"),
    (lambda: S.ReduceOnPlateau(0.1, min_lr=0.2), r"reduce_on_plateau: min_lr must be in \[0, 0.1\]"),
    (lambda: S.ReduceOnPlateau(0.1, eps=-1.0), "reduce_on_plateau: eps must be in"),
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_arguments_raise_clear_errors(make: Callable[[], object], message: str) -> None:
    with pytest.raises((OptregValueError, OptregTypeError), match=message):
        make()


@pytest.mark.parametrize("s", ALL, ids=repr)
@pytest.mark.parametrize("step", [-1, 1.5, "3", None, True])
def test_bad_step_raises(s: Callable[[int], float], step: object) -> None:
    with pytest.raises(OptregValueError, match=r": step must be an integer >= 0, got"):
        s(step)  # type: ignore[arg-type]


def test_numpy_integer_steps_are_accepted() -> None:
    s = S.exponential(0.1, 0.5)
    assert s(np.int64(3)) == s(3) == 0.1 * 0.5**3


def test_reduce_on_plateau_refuses_bad_metrics_and_bad_state() -> None:
    p = S.ReduceOnPlateau(0.1)
    for bad in ["loss", None, [1.0], True]:
        with pytest.raises(OptregTypeError, match="reduce_on_plateau: metric must be a real number"):
            p.step(bad)  # type: ignore[arg-type]
    assert p.last_epoch == 0  # refused metrics leave the state alone
    good = p.state_dict()
    with pytest.raises(OptregValueError, match=r"missing \['best'\], unknown \['bset'\]"):
        p.load_state_dict({**{k: v for k, v in good.items() if k != "best"}, "bset": 1.0})
    with pytest.raises(OptregValueError, match="num_bad_epochs must be an integer >= 0"):
        p.load_state_dict({**good, "num_bad_epochs": -1})
    with pytest.raises(OptregValueError, match="best must be a real number or"):
        p.load_state_dict({**good, "best": math.nan})
    with pytest.raises(OptregTypeError, match="state must be a mapping"):
        p.load_state_dict([("lr", 0.1)])  # type: ignore[arg-type]
    assert p.state_dict() == good
