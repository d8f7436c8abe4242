"""Tests of the figure builders (optreg.report.plots).

Oracles: numpy (convolution for the moving average, mean / std / min / max), scipy.stats.gmean for the
log-space band; the matplotlib objects themselves for titles, labels, legends (their window extents, for
where they sit) and drawn data.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import gmean

from optreg.errors import OptregValueError
from optreg.report.plots import (
    Panel,
    colors,
    contour_figure,
    curves_figure,
    lr_figure,
    mean_spread,
    scatter_figure,
    smooth,
    smooth_relative,
    spread_label,
)


def test_smooth_matches_numpy_convolution_past_the_warm_up():
    y = np.random.default_rng(0).normal(size=50)
    w = 7
    full = np.convolve(y, np.ones(w) / w, mode="valid")  # the trailing mean of y[t-w+1 .. t], t >= w-1
    np.testing.assert_allclose(smooth(y, w)[w - 1 :], full, rtol=1e-12)
    # the warm-up averages what exists so far
    np.testing.assert_allclose(smooth(y, w)[: w - 1], np.cumsum(y[: w - 1]) / np.arange(1, w), rtol=1e-12)
    np.testing.assert_array_equal(smooth(y, 1), y)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40),
    st.integers(1, 10),
)
def test_smooth_stays_within_the_running_bounds(values, window):
    """A moving average never leaves [min, max] of its window."""
    out = smooth(values, window)
    y = np.asarray(values)
    for t in range(len(y)):
        lo, hi = y[max(0, t - window + 1) : t + 1].min(), y[max(0, t - window + 1) : t + 1].max()
        assert lo - 1e-6 * (1 + abs(lo)) <= out[t] <= hi + 1e-6 * (1 + abs(hi))


def test_mean_spread_matches_numpy_and_cuts_to_the_shortest_run():
    runs = [[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0], [2.0, 5.0, 2.0]]
    a = np.array([r[:3] for r in runs])
    mean, low, high = mean_spread(runs)
    np.testing.assert_allclose(mean, a.mean(0))
    np.testing.assert_allclose(high - mean, a.std(0))
    np.testing.assert_allclose(mean - low, a.std(0))
    _, low, high = mean_spread(runs, "minmax")
    np.testing.assert_allclose(low, a.min(0))
    np.testing.assert_allclose(high, a.max(0))


def test_log_panel_band_is_geometric():
    """With log_y the curve drawn is the geometric mean (scipy.stats.gmean) and the band stays > 0."""
    runs = [[1.0, 0.1, 0.001], [1.0, 0.3, 0.0001], [1.0, 0.2, 0.5]]
    fig = curves_figure([Panel({"a": runs}, log_y=True, title="t", xlabel="x", ylabel="y")])
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), gmean(np.array(runs), axis=0), rtol=1e-12)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert (band > 0).all()
    assert ax.get_yscale() == "log"


def test_curves_figure_is_labelled_and_keeps_colours_across_panels():
    a = Panel({"sgd": [[3, 2, 1]], "adam": [[3, 1, 0.5]]}, title="loss", xlabel="iteration", ylabel="loss")
    b = Panel({"adam": [[0.5, 0.9]], "sgd": [[0.4, 0.8]]}, title="acc", xlabel="epoch", ylabel="acc", x=[1, 2])
    fig = curves_figure([a, b], title="Figure")
    assert fig.get_suptitle() == "Figure"
    left, right = fig.axes
    assert (left.get_title(), left.get_xlabel(), left.get_ylabel()) == ("loss", "iteration", "loss")
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["adam", "sgd"]
    colour = {ln.get_label(): ln.get_color() for ln in left.get_lines()}
    assert {ln.get_label(): ln.get_color() for ln in right.get_lines()} == colour
    assert colour == colors(["sgd", "adam"])
    np.testing.assert_array_equal(right.get_lines()[0].get_xdata(), [1, 2])


def test_lr_figure_draws_the_schedule():
    fig = lr_figure({"exp": lambda t: 0.1 * 0.5**t, "recorded": [0.1, 0.1, 0.05]}, steps=3)
    ys = {ln.get_label(): ln.get_ydata() for ln in fig.axes[0].get_lines()}
    np.testing.assert_allclose(ys["exp"], [0.1, 0.05, 0.025])
    np.testing.assert_allclose(ys["recorded"], [0.1, 0.1, 0.05])


def test_contour_and_scatter_figures():
    path = np.array([[-5.0, -2.0], [-4.0, -1.0], [0.0, 0.0]])
    fig = contour_figure(
        lambda x, y: 0.1 * x**2 + 2 * y**2, {"sgd": path, "adam": path / 2}, xlim=(-6, 1), ylim=(-3, 3), title="q"
    )
    assert fig.axes[0].get_legend() is not None and fig.get_suptitle() == "q"
    sep = contour_figure(
        lambda x, y: x**2 + y**2, {"a": path, "b": path, "c": path, "d": path}, xlim=(-6, 1), ylim=(-3, 3),
        separate=True, minimum=(0.0, 0.0),
    )  # fmt: skip
    visible = [ax for ax in sep.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b", "c", "d"]
    fig = scatter_figure({"a": ([1, 2, 3], [3, 1, 2])}, xlabel="lr", ylabel="loss", log_x=True, connect=True)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "lr"


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(OptregValueError, match="smooth needs finite values"):
        smooth([1.0, float("nan")], 2)
    with pytest.raises(OptregValueError, match="window must be an integer >= 1"):
        smooth([1.0], 0)
    with pytest.raises(OptregValueError, match="spread must be one of"):
        mean_spread([[1.0]], "iqr")
    with pytest.raises(OptregValueError, match="needs at least one panel"):
        curves_figure([])
    with pytest.raises(OptregValueError, match=r"path 'x' must have shape \(T, 2\)"):
        contour_figure(lambda x, y: x + y, {"x": [1.0, 2.0]}, xlim=(0, 1), ylim=(0, 1))
    with pytest.raises(OptregValueError, match="the same length"):
        scatter_figure({"a": ([1, 2], [1])})


# ------------------------------------------------------------------------------- readable figures


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def test_smooth_relative_matches_a_loop_over_growing_windows():
    """Oracle: numpy means over the window t - ceil(f (t + 1)) + 1 .. t, computed point by point."""
    import math

    y = np.random.default_rng(1).normal(size=300)
    for fraction in (0.05, 0.2, 1.0):
        expected = [y[t - max(1, math.ceil(fraction * (t + 1))) + 1 : t + 1].mean() for t in range(y.size)]
        np.testing.assert_allclose(smooth_relative(y, fraction), expected, rtol=1e-12)
    with pytest.raises(OptregValueError, match=r"fraction must be in \(0, 1\]"):
        smooth_relative(y, 0.0)


def test_a_log_panel_leaves_zeros_out_and_names_them():
    """A label whose values are all 0 (init's zeros: std 0) is not drawn at 1e-300: the y axis spans the
    other labels only (oracle: their min and max) and the panel's title names the label left out."""
    series = {"zeros": [[0.0, 0.0, 0.0]], "small": [[1e-3, 1e-2, 2e-3]], "big": [[1.0, 2.0, 0.5]]}
    fig = curves_figure([Panel(series, log_y=True, title="signal")])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 1e-4 < low <= 1e-3 and 2.0 <= high < 20.0
    assert [ln.get_label() for ln in ax.get_lines()] == ["small", "big"]
    assert "zeros" in ax.get_title() and "not drawn" in ax.get_title()


def test_a_band_says_what_it_is_in_the_legend():
    runs = [[3.0, 2.0, 1.0], [3.5, 2.5, 1.5], [2.5, 1.5, 0.5]]
    ax = curves_figure([Panel({"sgd": runs})]).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "shaded: ±1 sd over 3 seeds"]
    ax = curves_figure([Panel({"sgd": runs}, spread="minmax", runs_name="runs")]).axes[0]
    assert ax.get_legend().get_texts()[1].get_text() == "shaded: min to max over 3 runs"
    assert spread_label("std", 2, log_y=True) == "shaded: ±1 sd over 2 seeds, of log10 y"


def test_a_legend_below_the_panels_covers_no_axes():
    """legend="below": one figure legend, outside every axes (their window extents do not overlap)."""
    series = {f"schedule {i}": [[1.0 / (t + i + 1) for t in range(30)]] for i in range(9)}
    panels = [Panel(series, title="loss", log_y=True), Panel(series, title="accuracy")]
    fig = curves_figure(panels, legend="below")
    renderer = _drawn(fig)
    (legend,) = fig.legends
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in legend.get_texts()] == list(series)
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
        assert box.y1 <= ax.get_tightbbox(renderer).y0 + 1  # below the axes and their tick labels


def test_raw_curve_faint_behind_the_smoothed_one_and_short_curves_marked():
    """raw=True: the unsmoothed mean (oracle: numpy) drawn faint; mark_ends: a dot at the last point of the
    curves that stop before the longest one."""
    long, short = list(np.linspace(2.0, 0.1, 200)), [2.0, 1.5, 1.2, 1.0]
    fig = curves_figure([Panel({"K = 1": [long], "full": [short]}, smooth_fraction=0.2, raw=True, mark_ends=True,
                               x={"K = 1": range(1, 201), "full": range(1, 5)}, log_x=True)])  # fmt: skip
    ax = fig.axes[0]
    faint = [ln for ln in ax.get_lines() if (ln.get_alpha() or 1) < 0.5]
    np.testing.assert_allclose(faint[0].get_ydata(), long)
    main = next(ln for ln in ax.get_lines() if ln.get_label() == "K = 1")
    np.testing.assert_allclose(main.get_ydata(), smooth_relative(long, 0.2))
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [4.0]
    np.testing.assert_allclose(dots[0].get_ydata(), smooth_relative(short, 0.2)[-1:])


def test_a_note_is_written_on_the_panel():
    ax = curves_figure([Panel({"a": [[1.0, 2.0]]}, title="loss", note="diverged, not drawn: b (1 of 1 run)")]).axes[0]
    assert ax.get_title().splitlines() == ["loss", "diverged, not drawn: b (1 of 1 run)"]
