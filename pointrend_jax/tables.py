"""Plain-text tables of results, as eval.py and the benchmarks print them."""
from __future__ import annotations

from typing import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`header` and `rows` (cells as strings) aligned in columns: the first left-aligned,
    the others right-aligned, a rule under the header."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def line(r):
        return "  ".join([r[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(r[1:], widths[1:])])

    head = line(table[0])
    return "\n".join([head, "-" * len(head)] + [line(r) for r in table[1:]])
