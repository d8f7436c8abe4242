"""Tests of the terminal tables (optreg.report.tables).

Oracles: rich's own rendering of the tables at the given width (the lines it prints), and the table's
values formatted by ``cell_text``: every number must come out whole on one line, and no line may be wider
than the width.
"""

from __future__ import annotations

import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from optreg.report.tables import SPREAD_CAPTION, cell_text, terminal_tables


def _render(rows, width, **kw) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, highlight=False)
    for part in terminal_tables(rows, width, **kw):
        console.print(part)
    return buf.getvalue()


def _tokens(out: str) -> set[str]:
    return {t for line in out.splitlines() for t in re.split(r"[\s│┃]+", line) if t}


def _numbers(rows) -> list[str]:
    """The printed form of every number of the rows (a ``_sd`` to two significant digits)."""
    out = []
    for row in rows:
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(f"{value:.2g}" if key.endswith("_sd") else cell_text(value))
    return out


INIT_LIKE = [
    {"network": net, "scheme": s, "init": f"{s}_normal", "act_std_layer1": 0.5 + i / 7, "act_std_last": 1e-5 * i,
     "distinct_units_last": 64 - i, "final_train_loss": 2.302585 - i / 10, "final_train_loss_sd": 0.0123456,
     "val_accuracy": 0.097222 + i / 20, "test_accuracy": 0.1041667 + i / 21, "diverged": i % 2}
    for net in ("tanh", "relu") for i, s in enumerate(["zeros", "gaussian", "orthogonal", "sparse"])
]  # fmt: skip


def test_a_wide_table_at_80_columns_keeps_every_number_whole_and_continues_its_columns():
    out = _render(INIT_LIKE, 80, title="Parameter initialization")
    assert max(len(line) for line in out.splitlines()) <= 80
    tokens = _tokens(out)
    assert all(n in tokens for n in _numbers(INIT_LIKE))
    assert "Parameter initialization (continued)" in out  # the columns that do not fit come in a second table
    # the columns that name a row are repeated in the second table
    second = out.split("(continued)")[1]
    assert "network" in second and "scheme" in second and "orthogonal" in second
    assert SPREAD_CAPTION in " ".join(out.split())
    assert "± 0.012" in out  # the sd column is shown with its mean, to two significant digits


def test_a_table_that_fits_is_one_table_with_headers_on_one_line():
    rows = [{"optimizer": "adam", "lr": 0.001, "val_accuracy": 0.9123}]
    out = _render(rows, 120)
    assert "continued" not in out and "val_accuracy" in out and "0.9123" in out


def test_headers_wrap_after_underscores_not_inside_words():
    rows = [{"name": "x", **{f"metric_number_{i}": 0.1234 for i in range(6)}}]
    out = _render(rows, 60)
    assert max(len(line) for line in out.splitlines()) <= 60
    assert "metric_" in _tokens(out) and "number_0" in _tokens(out)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(40, 130),
    st.lists(
        st.fixed_dictionaries(
            {
                "label": st.sampled_from(["sgd", "momentum", "natural_exponential", "K = 1294 (full batch)"]),
                "a_long_column_name": st.floats(-1e9, 1e9, allow_nan=False),
                "b": st.integers(-(10**9), 10**9),
                "c_value": st.floats(1e-12, 1e3),
                "c_value_sd": st.floats(0, 10),
                "note": st.sampled_from(["-", "diverged at step 12", "holds"]),
            }
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_no_line_is_wider_than_the_width_and_no_number_is_split(width, rows):
    out = _render(rows, width, title="t")
    assert max(len(line) for line in out.splitlines()) <= width
    tokens = _tokens(out)
    assert all(n in tokens for n in _numbers(rows))
