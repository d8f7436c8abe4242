"""Figure builders for the lab (matplotlib, Agg; figures are made without pyplot's global state).

Every builder returns a :class:`matplotlib.figure.Figure` with a title, axis labels and a legend, sized to
be readable as a PNG in a report. Curves over several seeds are drawn as the mean with a shaded band
(± one standard deviation, or min..max), and the legend says which (``shaded: ±1 sd over 3 seeds``); a
label keeps its colour across the panels of a figure. On a log axis, values <= 0 are not drawn (and do not
stretch the axis): a label with no positive value is named on the panel instead. A panel's ``note`` is
written on it, under its title (e.g. which runs diverged and are left out).

- :func:`mean_spread`: the mean and band of several runs' curves (shortest length kept).
- :func:`smooth`: a trailing moving average, for noisy per-iteration losses; :func:`smooth_relative`: one
  over a window that grows with the step (the last 20 % of the steps so far), for a log step axis.
- :func:`curves_figure`: one or more panels of mean ± spread curves (loss per iteration, accuracy per epoch).
- :func:`lr_figure`: learning rate against the step, for schedules.
- :func:`contour_figure`: contours of a 2-D function with optimizer trajectories.
- :func:`scatter_figure`: points per label (e.g. final loss against a hyperparameter).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from optreg._checks import check_choice, check_int
from optreg.errors import OptregValueError

__all__ = [
    "Panel",
    "colors",
    "contour_figure",
    "curves_figure",
    "lr_figure",
    "mean_spread",
    "new_figure",
    "scatter_figure",
    "smooth",
    "smooth_relative",
    "spread_label",
]

#: The colour cycle (matplotlib's tab10, then tab20's light shades): readable, and distinct for 20 labels.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)  # fmt: skip


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A fixed colour per label, in order (cycling after 20)."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def new_figure(ncols: int = 1, nrows: int = 1, *, title: str = "", panel_size: tuple[float, float] = (5.6, 4.0)):
    """A figure with ``nrows x ncols`` axes (returned as a flat list) and a bold suptitle."""
    check_int("plots", "ncols", ncols, 1)
    check_int("plots", "nrows", nrows, 1)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig, axes


def smooth(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """The trailing moving average over ``window`` points (the first points average what exists so far).

    ``window = 1`` returns the values unchanged; NaN / None values are refused.
    """
    check_int("plots", "window", window, 1)
    y = np.asarray(values, dtype=float)
    if y.ndim != 1:
        raise OptregValueError(f"plots: smooth needs a 1-D sequence, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise OptregValueError("plots: smooth needs finite values (a diverged run has NaN / Inf)")
    if window == 1 or y.size == 0:
        return y
    c = np.cumsum(np.concatenate([[0.0], y]))
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def smooth_relative(values: Sequence[float] | np.ndarray, fraction: float) -> np.ndarray:
    """The trailing moving average over the last ``fraction`` of the points so far: point ``t`` (from 0)
    averages points ``t - w + 1 .. t`` with ``w = max(1, ceil(fraction * (t + 1)))``.

    The window is a constant width on a log step axis (``fraction = 0.2``: about a tenth of a decade), so the
    early steps keep their detail while the many late ones are averaged. NaN / Inf values are refused.
    """
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0.0 < fraction <= 1.0:
        raise OptregValueError(f"plots: fraction must be in (0, 1], got {fraction!r}")
    y = np.asarray(values, dtype=float)
    if y.ndim != 1:
        raise OptregValueError(f"plots: smooth_relative needs a 1-D sequence, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise OptregValueError("plots: smooth_relative needs finite values (a diverged run has NaN / Inf)")
    if y.size == 0:
        return y
    c = np.cumsum(np.concatenate([[0.0], y]))
    idx = np.arange(1, y.size + 1)
    window = np.maximum(1, np.ceil(fraction * idx - 1e-9)).astype(int)
    return (c[idx] - c[idx - window]) / window


def spread_label(spread: str, runs: int, *, log_y: bool = False, unit: str = "seeds") -> str:
    """What a band shows, for a legend: ``shaded: ±1 sd over 3 seeds`` (``, of log10 y`` on a log axis,
    where the band is taken over the logarithms), ``shaded: min to max over 3 seeds``."""
    check_choice("plots", "spread", spread, ("std", "minmax"))
    what = "±1 sd" if spread == "std" else "min to max"
    return f"shaded: {what} over {runs} {unit}" + (", of log10 y" if log_y and spread == "std" else "")


def mean_spread(runs: Sequence[Sequence[float]], spread: str = "std") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` of several runs' curves, point by point, cut to the shortest run.

    ``spread = "std"``: mean ± one (population) standard deviation; ``"minmax"``: the smallest and
    largest value; ``"none"``: the band is the mean itself.
    """
    check_choice("plots", "spread", spread, ("std", "minmax", "none"))
    curves = [np.asarray(r, dtype=float) for r in runs]
    if not curves or any(c.ndim != 1 for c in curves):
        raise OptregValueError("plots: mean_spread needs one or more 1-D curves")
    n = min(c.size for c in curves)
    a = np.stack([c[:n] for c in curves])
    mean = a.mean(axis=0)
    if spread == "std":
        sd = a.std(axis=0)
        return mean, mean - sd, mean + sd
    if spread == "minmax":
        return mean, a.min(axis=0), a.max(axis=0)
    return mean, mean, mean


@dataclass
class Panel:
    """One axes of :func:`curves_figure`.

    ``series``: label -> list of runs (each a list of values, one per ``x``). ``x``: the x values of
    the points (default 0, 1, 2, ...; may be shorter-cut like the runs), or a mapping label -> x values.
    ``smooth``: moving-average window applied to each run before averaging; ``smooth_fraction``: instead,
    :func:`smooth_relative` over that fraction of the steps so far. ``raw``: with smoothing, also draw the
    unsmoothed mean, faint, behind. ``log_y``/``log_x``: log scales; with ``log_y`` the mean and spread
    are taken over log10 of the values (a geometric mean with a multiplicative band, which a log axis shows
    undistorted) and values <= 0 are left out. ``ylim``: fixed y limits. ``integer_x``: integer ticks
    (epochs). ``spread``: the band, ``"std"``, ``"minmax"`` or ``"none"``; ``runs_name``: what the runs of
    a label are, for the legend (``"seeds"``). ``mark_ends``: a dot (and its x) at the end of each curve
    that stops before the longest one. ``note``: a line written on the panel (e.g. runs that diverged).
    """

    series: Mapping[str, Sequence[Sequence[float]]]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    x: Sequence[float] | Mapping[str, Sequence[float]] | None = None
    smooth: int = 1
    spread: str = "std"
    log_y: bool = False
    log_x: bool = False
    ylim: tuple[float, float] | None = None
    integer_x: bool = False
    legend: bool = True
    style: dict[str, Any] = field(default_factory=dict)
    smooth_fraction: float | None = None
    raw: bool = False
    runs_name: str = "seeds"
    mark_ends: bool = False
    note: str = ""


def _positive_log10(values: np.ndarray) -> np.ndarray:
    """log10 of the values, NaN where a value is <= 0 (not drawable on a log axis)."""
    out = np.full(values.shape, np.nan)
    np.log10(values, out=out, where=values > 0)
    return out


def _mean_curve(panel: Panel, curves: list[np.ndarray], spread: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if panel.log_y:  # the band in log space: geometric mean and a multiplicative spread; <= 0 is left out
        with np.errstate(invalid="ignore"):
            return tuple(10.0**a for a in mean_spread([_positive_log10(c) for c in curves], spread))  # type: ignore[return-value]
    return mean_spread(curves, spread)


def _smoothed(panel: Panel, run: Sequence[float]) -> np.ndarray:
    if panel.smooth_fraction is not None:
        return smooth_relative(run, panel.smooth_fraction)
    return smooth(run, panel.smooth)


def _draw_panel(ax: Any, panel: Panel, palette: dict[str, str]) -> list[Any]:
    """Draw ``panel`` on ``ax``; returns the legend's extra handles (what the shading means)."""
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    off_scale: list[str] = []
    band_runs = 0
    smoothing = panel.smooth > 1 or panel.smooth_fraction is not None
    for label, runs in panel.series.items():
        runs = [r for r in runs if len(r)]
        if not runs:
            continue
        curves = [_smoothed(panel, r) for r in runs]
        mean, low, high = _mean_curve(panel, curves, panel.spread)
        xs = panel.x.get(label) if isinstance(panel.x, Mapping) else panel.x
        x = np.arange(mean.size) if xs is None else np.asarray(xs, dtype=float)[: mean.size]
        mean, low, high = mean[: x.size], low[: x.size], high[: x.size]
        if not np.isfinite(mean).any():
            off_scale.append(label)
            continue
        color = palette[label]
        if panel.raw and smoothing:
            raw, _, _ = _mean_curve(panel, [np.asarray(r, dtype=float) for r in runs], "none")
            ax.plot(x, raw[: x.size], color=color, linewidth=0.6, alpha=0.22, zorder=1)
        ax.plot(x, mean, color=color, label=label, linewidth=1.6, zorder=3, **panel.style)
        if len(runs) > 1 and panel.spread != "none":
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0, zorder=2)
            band_runs = max(band_runs, len(runs))
        drawn.append((label, x, mean))
    if panel.mark_ends and drawn:
        longest = max(float(x[np.isfinite(m)][-1]) for _, x, m in drawn)
        for label, x, mean in drawn:
            ok = np.isfinite(mean)
            end_x, end_y = float(x[ok][-1]), float(mean[ok][-1])
            if end_x < longest:
                ax.plot([end_x], [end_y], "o", color=palette[label], markersize=5, markeredgecolor="k", zorder=4)
                ax.annotate(f"{label} ends ({end_x:g})", (end_x, end_y), xytext=(4, 4), textcoords="offset points",
                            fontsize=7, color=palette[label])  # fmt: skip
    notes = [panel.note] if panel.note else []
    if off_scale:
        notes.append(f"not drawn (no value > 0 on the log scale): {', '.join(off_scale)}")
    # the notes go under the title, where they cover no curve
    ax.set_title("\n".join([panel.title, *(textwrap.fill(n, 64) for n in notes)]).strip("\n"), fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.log_y:
        ax.set_yscale("log")
    if panel.log_x:
        ax.set_xscale("log")
    if panel.integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.grid(True, alpha=0.3)
    extra = []
    if band_runs:
        label = spread_label(panel.spread, band_runs, log_y=panel.log_y, unit=panel.runs_name)
        extra.append(Patch(facecolor="0.5", alpha=0.3, label=label))
    if panel.legend and ax.get_legend_handles_labels()[0]:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + extra, labels + [h.get_label() for h in extra], fontsize=8, frameon=False,
                  ncol=2 if len(panel.series) > 6 else 1)  # fmt: skip
    return extra


def curves_figure(
    panels: Sequence[Panel], *, title: str = "", ncols: int | None = None, legend: str = "panels"
) -> Figure:
    """Panels of mean ± spread curves side by side (``ncols`` per row, default all in one row).

    ``legend = "panels"``: each panel has its own legend (inside it); ``"below"``: one legend for the
    whole figure, below the panels, where it covers no curve.

    >>> loss = Panel({"adam": [[2.3, 1.1, 0.5], [2.2, 1.0, 0.6]]}, xlabel="iteration", ylabel="loss")
    >>> fig = curves_figure([loss], title="Figure 7.6")
    """
    if not panels:
        raise OptregValueError("plots: curves_figure needs at least one panel")
    check_choice("plots", "legend", legend, ("panels", "below"))
    ncols = len(panels) if ncols is None else check_int("plots", "ncols", ncols, 1)
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(ncols, nrows, title=title)
    labels: list[str] = []
    for p in panels:
        labels.extend(k for k in p.series if k not in labels)
    palette = colors(labels)
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels):
        if legend == "below":
            panel = replace(panel, legend=False)
        extra = _draw_panel(ax, panel, palette)
        for h in [*ax.get_legend_handles_labels()[0], *extra]:
            handles.setdefault(h.get_label(), h)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if legend == "below" and handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", frameon=False, fontsize=9,
                   ncols=min(len(handles), 5))  # fmt: skip
    return fig


def lr_figure(
    schedules: Mapping[str, Callable[[int], float] | Sequence[float]],
    steps: int,
    *,
    title: str = "Learning rate",
    xlabel: str = "iteration",
    log_y: bool = False,
) -> Figure:
    """Learning rate against the step for each schedule (a callable ``step -> lr`` or recorded values)."""
    check_int("plots", "steps", steps, 1)
    series = {}
    for label, s in schedules.items():
        values = [float(s(t)) for t in range(steps)] if callable(s) else [float(v) for v in s][:steps]
        series[label] = [values]
    panel = Panel(series, title=title, xlabel=xlabel, ylabel="learning rate", log_y=log_y, spread="none")
    return curves_figure([panel])


def contour_figure(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    paths: Mapping[str, np.ndarray | Sequence[Sequence[float]]],
    *,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    title: str = "",
    levels: int | Sequence[float] = 20,
    log_levels: bool = False,
    resolution: int = 200,
    separate: bool = False,
    ncols: int = 3,
    minimum: tuple[float, float] | None = None,
    xlabel: str = "$x_1$",
    ylabel: str = "$x_2$",
) -> Figure:
    """Contours of ``f(x1, x2)`` (vectorized over numpy grids) with each optimizer's path (an ``(T, 2)``
    array of iterates), the start marked by a circle, the end by a cross, ``minimum`` by a star.

    ``log_levels`` spaces the contour levels geometrically (for functions like Rosenbrock's that span many
    orders of magnitude). ``separate`` draws one small panel per path (``ncols`` per row) instead of all
    paths on one axes.
    """
    check_int("plots", "resolution", resolution, 10)
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    gx, gy = np.meshgrid(xs, ys)
    gz = np.asarray(f(gx, gy), dtype=float)
    if log_levels and isinstance(levels, int):
        lo = max(float(gz.min()), 1e-6)
        levels = np.geomspace(lo, float(gz.max()), levels)
    checked = {}
    for label, path in paths.items():
        p = np.asarray(path, dtype=float)
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
            raise OptregValueError(f"plots: path {label!r} must have shape (T, 2), got {p.shape}")
        checked[label] = p[np.isfinite(p).all(axis=1)]
    palette = colors(list(checked))
    if separate:
        check_int("plots", "ncols", ncols, 1)
        n = max(1, len(checked))
        cols = min(ncols, n)
        fig, axes = new_figure(cols, -(-n // cols), title=title, panel_size=(4.2, 3.4))
        groups = [(ax, {label: p}) for ax, (label, p) in zip(axes, checked.items())]
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
    else:
        fig, axes = new_figure(title=title, panel_size=(6.4, 5.0))
        groups = [(axes[0], checked)]
    for ax, group in groups:
        cs = ax.contour(gx, gy, gz, levels=levels, colors="0.6", linewidths=0.7)
        ax.clabel(cs, fontsize=6, fmt="%.3g")
        for label, p in group.items():
            c = palette[label]
            ax.plot(p[:, 0], p[:, 1], "-", color=c, linewidth=1.3, label=label, alpha=0.9)
            ax.plot(p[0, 0], p[0, 1], "o", color=c, markersize=5)
            ax.plot(p[-1, 0], p[-1, 1], "x", color=c, markersize=7, mew=2)
        if minimum is not None:
            ax.plot(*minimum, "*", color="k", markersize=10)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if separate and len(group) == 1:
            ax.set_title(next(iter(group)), fontsize=11)
        else:
            ax.legend(fontsize=8, frameon=True, loc="best")
    return fig


def scatter_figure(
    points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    log_y: bool = False,
    connect: bool = False,
) -> Figure:
    """One scatter series per label (``label -> (xs, ys)``); ``connect`` joins each series' points in x order."""
    fig, (ax,) = new_figure(title=title)
    palette = colors(list(points))
    for label, (xs, ys) in points.items():
        x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if x.shape != y.shape or x.ndim != 1:
            raise OptregValueError(f"plots: scatter series {label!r} needs xs and ys of the same length")
        ax.scatter(x, y, s=28, color=palette[label], label=label, alpha=0.85)
        if connect and x.size > 1:
            order = np.argsort(x)
            ax.plot(x[order], y[order], color=palette[label], linewidth=1.0, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig
