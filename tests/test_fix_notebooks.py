"""tools/fix_notebooks.py on small synthetic notebooks: markers become tags, printed tables become HTML
tables whose stored outputs equal what re-execution gives, machine paths leave the outputs; idempotent,
and every .ipynb stays in sync with its paired script and its learner copy."""

from __future__ import annotations

import copy
import importlib.util
import os

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools import classroom

ROOT = classroom.ROOT
spec = importlib.util.spec_from_file_location("fix_notebooks", ROOT / "tools" / "fix_notebooks.py")
fix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fix)

TABLE = "| model | acc |\n|---:|---:|\n| GPT | 0.9 |\n| LR | 0.8 |"
IMPORTS = (
    "from IPython.display import Markdown, display\n\n"
    "from course_lib import cache_dir, seed_everything\n"
    "from course_lib.metrics import format_table"
)


def notebook() -> nbformat.NotebookNode:
    rows = '[{"model": "GPT", "acc": 0.9}, {"model": "LR", "acc": 0.8}]'
    cells = [
        new_markdown_cell("# A chapter"),
        new_code_cell(IMPORTS),
        new_code_cell(
            "# NBVAL_CHECK_OUTPUT\nprint(2 + 2)",
            outputs=[new_output("stream", name="stdout", text="4\n")],
        ),
        new_code_cell(
            f'print("before")\nprint(format_table({rows}))\nprint("after")',
            outputs=[new_output("stream", name="stdout", text=f"before\n{TABLE}\nafter\n")],
        ),
        new_code_cell(
            f"display(Markdown(format_table({rows})))",
            outputs=[
                new_output(
                    "display_data",
                    data={"text/markdown": TABLE, "text/plain": "<IPython.core.display.Markdown object>"},
                )
            ],
        ),
        new_code_cell(
            'ckpt_dir = cache_dir("runs", "x")\nprint("saved in", ckpt_dir / "last.pt")',
            outputs=[
                new_output("stream", name="stdout", text="saved in /root/.cache/course_lib/runs/x/last.pt\n")
            ],
        ),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A solutions/ + chapters/ pair in tmp_path holding one synthetic solution notebook."""
    monkeypatch.setattr(classroom, "SOLUTIONS", tmp_path / "solutions")
    monkeypatch.setattr(classroom, "CHAPTERS", tmp_path / "chapters")
    path = tmp_path / "solutions" / "01_demo" / "01_demo.ipynb"
    path.parent.mkdir(parents=True)
    jupytext.write(notebook(), path, fmt="ipynb")
    jupytext.write(
        jupytext.read(path), path.with_suffix(".py"), fmt="py:percent", config=classroom._jupytext_config()
    )
    return path


def files(path):
    learner = classroom.learner_path(path)
    return {p: p.read_text() for p in (path, path.with_suffix(".py"), learner, learner.with_suffix(".py"))}


def test_fix_is_complete_in_sync_and_idempotent(course):
    done = fix.fix_file(course)
    assert any("markers -> tags" in d for d in done) and any("HTML table" in d for d in done)
    first = files(course)
    assert fix.fix_file(course) == [] and files(course) == first, "a second run changed something"

    nb = jupytext.read(course)
    for p in (course, classroom.learner_path(course)):  # the pair check of tests/test_notebooks.py
        expected = jupytext.writes(jupytext.read(p), fmt="py:percent", config=classroom._jupytext_config())
        assert p.with_suffix(".py").read_text() == expected
    assert classroom.generate(course, write=False)[1] == first[classroom.learner_path(course)]

    imports, marked, printed, shown, paths = nb.cells[1:]
    assert "NBVAL" not in marked.source and marked.metadata["tags"] == ["nbval-check-output"]
    assert '# %% tags=["nbval-check-output"]' in course.with_suffix(".py").read_text()
    assert "Markdown" not in imports.source and "from IPython.display import display" not in imports.source
    assert "from course_lib import cache_dir, display_path, seed_everything" in imports.source
    assert printed.source.splitlines()[1].startswith("format_table([") and printed.source.endswith('"after")')
    assert shown.source.startswith("format_table([") and shown.source.endswith(").show()")
    assert [o.output_type for o in printed.outputs] == ["stream", "display_data", "stream"]
    assert printed.outputs[0].text == "before\n" and printed.outputs[2].text == "after\n"
    for out in (printed.outputs[1], shown.outputs[0]):
        assert "<table" in out.data["text/html"] and out.data["text/markdown"] == TABLE
    assert 'display_path(ckpt_dir / "last.pt")' in paths.source
    assert paths.outputs[0].text == "saved in <cache>/runs/x/last.pt\n"


def test_stored_outputs_are_what_re_execution_gives(course, tmp_path):
    from nbclient import NotebookClient

    fix.fix_file(course)
    nb = jupytext.read(course)
    stored = copy.deepcopy(nb)
    env = {"PYTHONPATH": str(ROOT), "COURSE_CACHE": str(tmp_path / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    strip = lambda outs: [{k: v for k, v in o.items() if k != "execution_count"} for o in outs]  # noqa: E731
    for i in (2, 3, 4, 5):
        assert strip(nb.cells[i].outputs) == strip(stored.cells[i].outputs), f"cell {i}"


def test_a_notebook_without_anything_to_fix_is_left_alone(course):
    fix.fix_file(course)
    before = files(course)
    assert fix.main([str(course), "--check"]) == 0 and files(course) == before


def test_check_mode_reports_without_writing(course, capsys):
    before = course.read_text()
    assert fix.main([str(course), "--check"]) == 1
    assert course.read_text() == before and "markers -> tags" in capsys.readouterr().out


def test_split_stream_keeps_text_around_tables():
    pieces = fix._split_stream(f"a\n{TABLE}\n\nb\n{TABLE}\n")
    assert pieces == [("text", "a\n"), ("table", TABLE), ("text", "\nb\n"), ("table", TABLE)]
    assert fix._split_stream("| just a line |\n") == [("text", "| just a line |\n")]


def test_clean_paths():
    assert fix.clean_paths("at /root/.cache/course_lib/a/b.pt.") == "at <cache>/a/b.pt."
    assert fix.clean_paths("'/home/me/.cache/course_lib'") == "'<cache>'"
    assert fix.clean_paths("see /work/wt/x/solutions/01/a.py") == "see solutions/01/a.py"
    assert fix.clean_paths("keep <cache>/x and a/b/c") == "keep <cache>/x and a/b/c"


def _figure_png(transparent: bool = False) -> bytes:
    """A real chart (lines, text, a colour map) as the inline backend stores it."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 3))
    a.plot([0, 1, 2], [2, 0, 1], label="loss")
    a.legend()
    b.imshow([[0.0, 0.3], [0.7, 1.0]], cmap="viridis")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=transparent)
    plt.close(fig)
    return buf.getvalue()


def test_figures_are_stored_compactly_and_look_the_same():
    import base64
    import io

    import numpy as np
    from PIL import Image

    raw = _figure_png()
    cell = new_code_cell(
        "plot()", outputs=[new_output("display_data", data={"image/png": base64.b64encode(raw).decode()})]
    )
    assert fix.fix_figures(cell)
    small = base64.b64decode(cell.outputs[0]["data"]["image/png"])
    assert len(small) < 0.6 * len(raw), (len(small), len(raw))
    before = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=float)
    after = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=float)
    assert before.shape == after.shape
    assert np.abs(before - after).mean() < 1.0  # of 255: no visible change
    assert (after[0, 0] == 255).all()  # white stays white
    assert not fix.fix_figures(cell)  # idempotent


def test_see_through_figures_are_left_alone():
    import base64

    raw = _figure_png(transparent=True)
    cell = new_code_cell(
        "plot()", outputs=[new_output("display_data", data={"image/png": base64.b64encode(raw).decode()})]
    )
    assert not fix.fix_figures(cell)
    assert base64.b64decode(cell.outputs[0]["data"]["image/png"]) == raw


def test_a_kernel_that_uses_the_course_style_stores_compact_figures(monkeypatch):
    """use_course_style() registers compact_png for figures, before the inline backend registers its own."""
    monkeypatch.delenv("MPLBACKEND", raising=False)  # CI's Agg: a learner's kernel uses the inline backend
    import base64
    import io

    from nbclient import NotebookClient
    from PIL import Image

    nb = new_notebook(
        cells=[
            new_code_cell("import matplotlib.pyplot as plt\nfrom course_lib.plots import use_course_style"),
            new_code_cell("use_course_style()"),
            new_code_cell("plt.plot([1, 2], [3, 1])\nplt.show()"),
            new_code_cell("fig, ax = plt.subplots()\nax.imshow([[0, 1], [1, 0]])\nfig"),
        ]
    )
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    pngs = [o["data"]["image/png"] for c in nb.cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2
    assert {Image.open(io.BytesIO(base64.b64decode(p))).mode for p in pngs} == {"P"}


def _bar_notebook(value: float, top: float) -> nbformat.NotebookNode:
    """A notebook with one stored tqdm bar: its text/plain as at creation, its saved state as at the end."""
    ids = {"box": "b0", "left": "l0", "bar": "p0", "right": "r0"}
    state = {
        ids["box"]: {
            "model_name": "HBoxModel",
            "state": {"children": [f"IPY_MODEL_{ids[k]}" for k in ("left", "bar", "right")]},
        },
        ids["left"]: {"model_name": "HTMLModel", "state": {"value": "train:\u2007100%"}},
        ids["bar"]: {"model_name": "FloatProgressModel", "state": {"value": value, "max": top}},
        ids["right"]: {
            "model_name": "HTMLModel",
            "state": {"value": "\u20071000/1000\u2007[07:41&lt;00:00]"},
        },
    }
    data = {
        fix.WIDGET_VIEW: {"model_id": ids["box"], "version_major": 2, "version_minor": 0},
        "text/plain": "train:   0%|          | 0/1000 [00:00<?, ?it/s]",
    }
    nb = new_notebook(cells=[new_code_cell("train()", outputs=[new_output("display_data", data=data)])])
    nb.metadata["widgets"] = {fix.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_a_stored_progress_bar_reads_as_it_ended():
    nb = _bar_notebook(1000.0, 1000.0)
    assert fix.fix_progress_text(nb) == 1
    text = nb.cells[0].outputs[0]["data"]["text/plain"]
    assert text == "train: 100%|██████████| 1000/1000 [07:41<00:00]"
    assert fix.fix_progress_text(nb) == 0  # idempotent
    half = _bar_notebook(500.0, 1000.0)  # an interrupted run keeps its partial bar
    fix.fix_progress_text(half)
    assert "|█████     |" in half.cells[0].outputs[0]["data"]["text/plain"]


def test_a_widget_that_is_not_a_bar_keeps_its_text():
    nb = _bar_notebook(1.0, 1.0)
    state = nb.metadata["widgets"][fix.WIDGET_STATE]["state"]
    state["p0"]["model_name"] = "IntSliderModel"
    assert fix.fix_progress_text(nb) == 0
    assert nb.cells[0].outputs[0]["data"]["text/plain"].startswith("train:   0%")
