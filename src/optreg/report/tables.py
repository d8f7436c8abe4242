"""Tables for a terminal of any width that never split a number across lines.

:func:`terminal_tables` turns a list of dict rows into one or more :class:`rich.table.Table`, each at most
``width`` characters wide. Every column is at least as wide as its widest number (and its header's longest
piece, headers being wrapped at spaces and after ``_``, and any word of up to :data:`KEEP` characters), so
rich wraps a cell only between words and never inside a number; the rest of the width goes to the columns
that would otherwise wrap. When even those minimum widths do not fit, the columns are continued in
further tables, each repeating the columns that name a row (the leading text columns, up to a third of
the width), like a wide data frame printed on a narrow screen.

A column ``x_sd`` next to a column ``x`` is shown in ``x``'s column as ``x ± sd`` (the sd to two
significant digits); the header says ``x ± sd`` and a caption says what the spread is
(:data:`SPREAD_CAPTION`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Column, Table
from rich.text import Text

__all__ = ["KEEP", "SPREAD_CAPTION", "cell_text", "terminal_tables"]

#: Words up to this many characters are never split either (longer text, such as a path, may be folded).
KEEP = 16
#: The caption of a table with ``x ± sd`` columns.
SPREAD_CAPTION = "x ± sd: the mean and the standard deviation over the seeds (or runs)"

_NUMBER = re.compile(r"^[-+]?(?:\d[\d,_:]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?$|^[-+]?(?:inf|nan)$", re.IGNORECASE)
#: One border and two characters of padding per column, and the closing border.
_PER_COLUMN, _EDGE = 3, 1


def cell_text(value: Any) -> str:
    """How a table cell prints: ``-`` for None, yes / no, floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _is_number(token: str) -> bool:
    if token.lower().lstrip("+-") in ("inf", "nan"):
        return True
    return bool(_NUMBER.match(token)) and any(c.isdigit() for c in token)


def _min_width(texts: Sequence[str]) -> int:
    """The narrowest width at which no number and no word of up to :data:`KEEP` characters is split."""
    widest = 1
    for text in texts:
        for token in text.split():
            widest = max(widest, len(token) if len(token) <= KEEP or _is_number(token) else KEEP)
    return widest


def _max_width(texts: Sequence[str]) -> int:
    return max((len(line) for text in texts for line in text.splitlines()), default=1) or 1


_HEADER_PIECE = re.compile(r"[^\s_]*_|[^\s_]+")


def _header_pieces(header: str) -> list[str]:
    """A header's pieces, which it may be wrapped between: words, split after each ``_``."""
    return _HEADER_PIECE.findall(header)


def _wrap_header(header: str, width: int) -> str:
    """``header`` in lines of at most ``width`` characters, broken at spaces and after underscores
    (``val_accuracy`` -> ``val_`` / ``accuracy``); a single piece wider than ``width`` stays whole."""
    lines: list[str] = []
    for word in header.split():
        for j, piece in enumerate(_header_pieces(word)):
            sep = " " if j == 0 and lines else ""
            if lines and len(lines[-1]) + len(sep) + len(piece) <= width:
                lines[-1] += sep + piece
            else:
                lines.append(piece)
    return "\n".join(lines)


def _grow(widths: list[int], targets: list[int], available: int) -> list[int]:
    """``widths`` grown toward ``targets`` with the space left in ``available``: first whole columns, those
    that lack least first (a column grown only part of the way wraps all the same), then what is left to
    the others in proportion to what they lack."""
    widths = list(widths)
    spare = available - sum(widths)
    for i in sorted(range(len(widths)), key=lambda i: targets[i] - widths[i]):
        if 0 < targets[i] - widths[i] <= spare:
            spare -= targets[i] - widths[i]
            widths[i] = targets[i]
    while spare > 0:
        lacking = [i for i, w in enumerate(widths) if w < targets[i]]
        if not lacking:
            break
        need = sum(targets[i] - widths[i] for i in lacking)
        if need <= spare:
            for i in lacking:
                widths[i] = targets[i]
            break
        shares = [(targets[i] - widths[i]) * spare // need for i in lacking]
        if not any(shares):  # all rounded down: one character each, the most lacking first
            for i in sorted(lacking, key=lambda i: widths[i] - targets[i])[:spare]:
                widths[i] += 1
            break
        for i, share in zip(lacking, shares):
            widths[i] += share
        spare -= sum(shares)
    return widths


def _fits(mins: Sequence[int], width: int) -> bool:
    return sum(mins) + _PER_COLUMN * len(mins) + _EDGE <= width


def _groups(mins: list[int], width: int, keys: int = 1) -> list[list[int]]:
    """The column indices of each table: all of them if their minimum widths fit in ``width``, else the
    ``keys`` first columns (the row's name) and as many of the next ones as fit, repeatedly."""
    if _fits(mins, width) or len(mins) <= keys + 1:
        return [list(range(len(mins)))]
    groups: list[list[int]] = []
    group = list(range(keys))
    for i in range(keys, len(mins)):
        if len(group) > keys and not _fits([*(mins[j] for j in group), mins[i]], width):
            groups.append(group)
            group = list(range(keys))
        group.append(i)
    groups.append(group)
    return groups


def _keys(mins: list[int], numeric: list[bool], width: int) -> int:
    """How many leading columns name a row (and are repeated in every table): the leading text columns, as
    long as they take at most a third of ``width``; at least one."""
    keys, used = 0, 0
    for m, is_number in zip(mins, numeric):
        if is_number or (keys and used + m + _PER_COLUMN > width // 3):
            break
        keys, used = keys + 1, used + m + _PER_COLUMN
    return max(1, keys)


def terminal_tables(
    rows: Sequence[Mapping[str, Any]], width: int, *, title: str = "", caption: str = ""
) -> list[Any]:
    """``rows`` (dicts; the columns are the keys in order of first appearance) as rich renderables that fit
    in ``width`` characters without splitting a number (see the module docstring): the title, one or more
    tables, the caption. A cell is :func:`cell_text` of its value; ``x`` with an ``x_sd`` column is
    ``x ± sd``. ``caption`` goes under the last table (after :data:`SPREAD_CAPTION` when there are spread
    columns).

    The widths, in order of preference: every cell and header on one line; headers wrapped (at spaces and
    after ``_``); cells wrapped between words too; the columns continued in further tables.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    spread = {c for c in columns if f"{c}_sd" in columns}
    shown = [c for c in columns if not (c.endswith("_sd") and c[:-3] in columns)]
    headers = [f"{c} ± sd" if c in spread else c for c in shown]
    cells: list[list[str]] = []
    for c in shown:
        column = []
        for row in rows:
            text = cell_text(row.get(c))
            if c in spread and row.get(f"{c}_sd") is not None:
                sd = row[f"{c}_sd"]
                text = f"{text} ± {f'{sd:.2g}' if isinstance(sd, float) and math.isfinite(sd) else cell_text(sd)}"
            column.append(text)
        cells.append(column)
    head_min = [max(len(p) for p in _header_pieces(h)) for h in headers]
    mins = [max(_min_width(col), m) for col, m in zip(cells, head_min)]
    whole = [max(_max_width(col), m) for col, m in zip(cells, head_min)]  # cells on one line
    natural = [max(w, len(h)) for w, h in zip(whole, headers)]  # headers on one line too
    numeric = [all(_is_number(t) or t in ("-", "±") for text in col for t in text.split()) for col in cells]
    notes = [SPREAD_CAPTION] if spread else []
    if caption:
        notes.append(caption)
    out: list[Any] = [Text(title, style="italic")] if title else []
    groups = _groups(mins, width, _keys(mins, numeric, width)) if shown else []
    for g, group in enumerate(groups):
        available = width - _PER_COLUMN * len(group) - _EDGE
        widths = [mins[i] for i in group]
        for targets in (whole, natural):
            widths = _grow(widths, [targets[i] for i in group], available)
        table = Table(
            *[
                Column(
                    _wrap_header(headers[i], w),
                    width=w,
                    overflow="fold",
                    justify="right" if numeric[i] else "left",
                )
                for i, w in zip(group, widths)
            ],
            header_style="bold",
        )
        for r in range(len(rows)):
            table.add_row(*[cells[i][r] for i in group])
        if g:
            out.append(Text(f"{title} (continued)".strip(), style="italic"))
        out.append(table)
    if notes:
        out.append(Text("; ".join(notes)))
    return out
