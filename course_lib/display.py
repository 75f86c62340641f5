"""Tables a notebook shows: one object that is Markdown text for ``print`` and an HTML table on screen.

A cell that prints Markdown (``print("| a | b |")``) shows pipes: the website renders a printed string
as text, and so does JupyterLab. :func:`format_table` returns a :class:`Table` instead, a ``str`` (the
Markdown, so ``print`` and string tests work as before) that IPython displays as an HTML table, in
JupyterLab and on the website alike::

    format_table([{"model": "GPT", "acc": 0.91}]).show()   # or: display(format_table(rows))
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


class Table(str):
    """A Markdown table (its ``str``) that notebooks display as an HTML table (``_repr_html_``).

    ``header`` holds the column names and ``rows`` the formatted cells, one tuple per row; numbers are
    right-aligned, as in the Markdown (``---:``).
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __new__(cls, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
        header = tuple(str(h) for h in header)
        rows = tuple(tuple(str(c) for c in row) for row in rows)
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise ValueError(f"table row {i} has {len(row)} cells but the header has {len(header)}")
        lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        table = super().__new__(cls, "\n".join(lines) if header else "")  # no columns: an empty string
        table.header, table.rows = header, rows
        return table

    @classmethod
    def from_markdown(cls, text: str) -> Table:
        """Parse the Markdown a :class:`Table` prints (header, ``---:`` line, rows) back into one."""
        lines = [line.strip() for line in text.strip().splitlines()]
        if len(lines) < 2 or not all(line.startswith("|") and line.endswith("|") for line in lines):
            raise ValueError(f"not a Markdown table (every line must start and end with '|'): {text[:80]!r}")
        split = lambda line: [c.strip() for c in line[1:-1].split(" | ")]  # noqa: E731
        return cls(split(lines[0]), [split(line) for line in lines[2:]])

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f'<th style="text-align: right">{esc(h)}</th>' for h in self.header)
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align: right">{esc(c)}</td>' for c in row) + "</tr>"
            for row in self.rows
        )
        return f'<table class="course-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # text/plain: the Markdown, not a repr
        printer.text(str(self))

    def show(self) -> None:
        """Display the table in the running notebook (an HTML table; the Markdown outside IPython)."""
        try:
            from IPython.display import display
        except ModuleNotFoundError:  # plain Python: print the Markdown
            print(self)
            return
        display(self)


def format_table(rows: Sequence[Mapping[str, Any]], floatfmt: str = ".3g") -> Table:
    """Rows of equal keys -> a :class:`Table` (numbers formatted with ``floatfmt``)."""
    if not rows:
        return Table([], [])
    keys = list(rows[0])
    cell = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    return Table(keys, [[cell(r[k]) for k in keys] for r in rows])


__all__ = ["Table", "format_table"]
