"""Tables shown as HTML tables, not pipes, on screen; printed paths without this machine's home folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.formatters import DisplayFormatter

from course_lib import display_path
from course_lib.display import Table, format_table

ROWS = [{"model": "GPT <small>", "acc": 0.91234, "n": 3}, {"model": "LR", "acc": 0.5, "n": 10}]


def test_format_table_is_the_same_markdown_text_as_before():
    table = format_table(ROWS)
    assert str(table) == (
        "| model | acc | n |\n|---:|---:|---:|\n| GPT <small> | 0.912 | 3 |\n| LR | 0.5 | 10 |"
    )
    assert format_table([]) == ""


def test_ipython_displays_a_table_as_html_with_markdown_and_text_fallbacks():
    data, _ = DisplayFormatter().format(format_table(ROWS, floatfmt=".2f"))
    assert set(data) == {"text/plain", "text/html", "text/markdown"}
    html = data["text/html"]
    assert html.count("<tr>") == 3 and html.count("<th ") == 3 and html.count("<td ") == 6
    assert "GPT &lt;small&gt;" in html and "<small>" not in html  # cells are escaped
    assert "0.91" in html and "0.9123" not in html
    assert data["text/plain"] == data["text/markdown"] == str(format_table(ROWS, floatfmt=".2f"))


def test_a_printed_table_parses_back_into_the_same_table():
    table = format_table(ROWS)
    again = Table.from_markdown(str(table) + "\n")
    assert again == table and again.header == table.header and again.rows == table.rows
    with pytest.raises(ValueError, match="not a Markdown table"):
        Table.from_markdown("| a | b |\nplain text")
    with pytest.raises(ValueError, match="row 0 has 1 cells but the header has 2"):
        Table(["a", "b"], [["1"]])


def test_show_prints_the_markdown_outside_ipython(capsys):
    format_table(ROWS).show()
    assert capsys.readouterr().out.startswith("| model | acc | n |")


def test_display_path_hides_the_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    assert display_path(tmp_path / "cache" / "runs" / "x" / "last.pt") == "<cache>/runs/x/last.pt"
    assert display_path(tmp_path / "cache") == "<cache>"
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "data" / "a.txt") == "data/a.txt"
    assert display_path("/elsewhere/a.txt") == str(Path("/elsewhere/a.txt").resolve())
