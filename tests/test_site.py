"""The course site (kfrtrl_lab.notebook.site) and the explorers without a kernel
(widgets.Explorer.static_figure): a small synthetic lesson that follows the course's cell
conventions is rendered, built with Sphinx and opened in headless Chromium (those tests skip,
saying so, without Chromium); the static figure shows at every step of its sliders exactly what the
live explorer draws for those control values."""

import json
import re
from pathlib import Path

import ipywidgets
import nbformat
import plotly.graph_objects as go
import pytest

from kfrtrl_lab.notebook import figures, widgets
from kfrtrl_lab.notebook.site import LESSONS, PAPERS, build, lesson_copy, roadmap_row, site_links

PLOTLY_JS = 3_000_000  # plotly.min.js is ~4.8 MB; a figure without it is a few kB


# --- explorers without a kernel ----------------------------------------------------------------------

def toy_explorer():
    """Two sliders, a checkbox and a multiple choice, and a draw cheap enough to call at every step;
    the number of traces and the axis type change with the controls, as in the real explorers."""

    def draw(a, b, log, names):
        fig = go.Figure([go.Scatter(x=[1, 2, 3], y=[a, a * b, a + b + 1], name=f"{name} a={a} b={b}")
                         for name in names[: a]])
        return fig.update_layout(title=f"a={a}, b={b}", yaxis=dict(type="log" if log else "linear"))

    controls = {"a": ipywidgets.SelectionSlider(options=[1, 2, 3], value=2, description="a"),
                "b": ipywidgets.SelectionSlider(options=[0.5, 1.0, 2.0], value=1.0, description="b"),
                "log": ipywidgets.Checkbox(value=False, description="log"),
                "names": ipywidgets.SelectMultiple(options=["p", "q", "r"], value=("p", "q", "r"))}
    return widgets.Explorer(controls, draw)


def plain(fig_json: dict) -> dict:
    """A trace as JSON, without the visibility the static figure sets."""
    return {k: v for k, v in fig_json.items() if k != "visible"}


def assert_static_matches_live(explorer):
    """At every step of every slider and button of the static figure, the traces it shows and its
    title are those the live explorer draws for that step's control values."""
    static = explorer.static_figure()
    data = json.loads(static.to_json())
    axes = explorer.static_axes()
    start = explorer.values()
    names_by_kind = {"sliders": [n for n in axes if not isinstance(explorer.controls[n], ipywidgets.Checkbox)],
                     "updatemenus": [n for n in axes if isinstance(explorer.controls[n], ipywidgets.Checkbox)]}
    checked = 0
    for kind, names in names_by_kind.items():
        for menu, name in zip(data["layout"].get(kind, []), names):
            steps = menu["steps"] if kind == "sliders" else menu["buttons"]
            assert len(steps) == len(axes[name])
            for value, step in zip(axes[name], steps):
                restyle, relayout = step["args"]
                shown = [plain(t) for t, v in zip(data["data"], restyle["visible"]) if v is True]
                explorer.controls[name].value = value  # the live explorer recomputes its figure
                live = json.loads(explorer.figure.to_json())
                assert shown == [plain(t) for t in live["data"]], (name, value)
                assert relayout.get("title") == live["layout"].get("title"), (name, value)
                explorer.controls[name].value = start[name]
                # the other controls go back to their starting values, as the figure shows them
                for other in axes:
                    if other != name:
                        group = "updatemenus" if other in names_by_kind["updatemenus"] else "sliders"
                        where = f"{group}[{names_by_kind[group].index(other)}].active"
                        assert relayout[where] == axes[other].index(start[other])
                checked += 1
    # the figure opens on the starting setting
    assert [plain(t) for t in data["data"] if t["visible"] is True] == \
        [plain(t) for t in json.loads(explorer.figure.to_json())["data"]]
    return static, checked


def test_static_figure_shows_what_the_live_explorer_draws_at_every_step():
    explorer = toy_explorer()
    static, checked = assert_static_matches_live(explorer)
    assert checked == 3 + 3 + 2  # every value of each slider, both states of the checkbox
    # the current setting, then each other value of one control: 1 + 2 + 2 + 1 settings
    assert len(explorer.static_settings()) == 6 and len(static.data) == sum(
        min(a, 3) for a in (2, 1, 3, 2, 2, 2))
    assert [s.currentvalue.prefix for s in static.layout.sliders] == ["a = ", "b = "]
    assert [b.label for b in static.layout.updatemenus[0].buttons] == ["log: off", "log: on"]
    assert "fixed here: names = p, q, r" in explorer.static_note()


def test_static_figure_of_the_real_explorers():
    cost = widgets.cost_model_explorer(methods=("rtrl", "kf-rtrl", "uoro"))
    _, checked = assert_static_matches_live(cost)
    assert checked == 6 + 6
    kron = widgets.kron_step_explorer(points=11)
    _, checked = assert_static_matches_live(kron)
    assert checked == 3 * 5
    runs = [{"config": {"task": "copy", "method": m, "hidden": 8, "batch": 4, "clip": 1.0, "seed": 0},
             "steps_done": 20, "curve": [{"step": 10, "t_max": 1}, {"step": 20, "t_max": 2}]} for m in ("kf-rtrl", "uoro")]
    overlay = widgets.runs_explorer(runs, "t_max")
    static, checked = assert_static_matches_live(overlay)
    assert checked == 2 and not static.layout.sliders  # the checkbox: two buttons
    depth = widgets.depth_explorer(depth_options=(1, 2), T=8, width=4, hidden=4, depth=2)
    static, checked = assert_static_matches_live(depth)
    assert checked == 2 + 3 + 4 and len(static.layout.sliders) == 3  # depth, ring, method: each its slider


def test_variance_explorer_keeps_the_costly_controls_fixed():
    explorer = widgets.variance_explorer(n_options=(4, 6), lengths=(3, 5), samples_options=(10, 20))
    assert set(explorer.static_axes()) == {"n", "T_max"}  # samples and estimators stay as they are
    _, checked = assert_static_matches_live(explorer)
    assert checked == 4


def test_static_report_displays_the_static_figure(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    monkeypatch.setenv("KFRTRL_STATIC_REPORT", "1")
    InteractiveShell.instance()
    figures.use_offline_renderer()  # as the notebooks do
    explorer = toy_explorer()
    with capture_output() as captured:
        explorer._ipython_display_()
    widget, note, figure = [out.data for out in captured.outputs]
    assert "application/vnd.jupyter.widget-view+json" in widget
    assert "A precomputed copy of the explorer (6 settings)" in note["text/markdown"]
    assert len(figure["application/vnd.plotly.v1+json"]["layout"]["sliders"]) == 2


# --- a synthetic lesson ------------------------------------------------------------------------------

def figure_outputs(fig):
    """What the notebooks store for a figure: the offline renderer's bundle (plotly.js in the first)."""
    figures.use_offline_renderer()
    return [nbformat.v4.new_output("display_data", data=fig._repr_mimebundle_())]


def synthetic_lesson(folder: Path, name: str = "03_synthetic") -> Path:
    """An executed lesson as papermill leaves it, with every convention of the course's cells."""
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    stream = lambda text: [nbformat.v4.new_output("stream", name="stdout", text=text)]
    explorer = toy_explorer()
    cells = [
        md("# 3 · A synthetic lesson\n\nThe estimate $\\hat g$ of $g = \\mathrm{d}L/\\mathrm{d}\\theta$.\n\n"
           f"```{{prf:proposition}} Doubling is linear\n:label: {name}-linear\n$2(x + y) = 2x + 2y$.\n```"),
        md("## In this lesson\n\nBy the end you can double a number.", metadata={"tags": ["objectives"]}),
        code('profile = "quick"', metadata={"tags": ["injected-parameters"]}),
        code("import bookkeeping", metadata={"tags": ["hide-input"]}, outputs=stream("set up\n")),
        md("## Exercise: doubling\n\n**Write** `double(x)`, which returns $2x$."),
        code("def double(x):\n    raise NotImplementedError", metadata={"tags": ["exercise"]}),
        code("def double(x):\n    return 2 * x", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}}),
        md("Doubling is adding $x$ to itself.", metadata={"tags": ["solution"]}),
        code("check_double(double)", metadata={"tags": ["check"]}, outputs=stream("double: ok\n")),
        code("figure", outputs=figure_outputs(go.Figure(go.Scatter(x=[1, 2], y=[3, 1], name="a line")))),
        code("explorer", outputs=[
            nbformat.v4.new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "[controls]"}),
            nbformat.v4.new_output("display_data", data={"text/markdown": explorer.static_note()}),
            *figure_outputs(explorer.static_figure())]),
        md("See the [notation](../docs/notation.md) and [lesson 4](../notebooks/04_second.ipynb).\n\n"
           "Doubling is easy.", metadata={"tags": ["takeaways"]}),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_lesson_copy_renders_the_cell_conventions(tmp_path):
    nb = nbformat.read(synthetic_lesson(tmp_path), as_version=4)
    page, notes = lesson_copy(nb, "03_synthetic")
    assert notes == [] and "widgets" not in page.metadata
    sources = [c.source for c in page.cells]
    start = next(i for i, s in enumerate(sources) if s.startswith("```{exercise-start}"))
    # its heading numbers the exercise, so the box does not
    assert sources[start] == "```{exercise-start}\n:label: 03_synthetic-exercise-1\n:nonumber: \n```"
    assert sources[start - 1] == "## Exercise: doubling"  # a section of the lesson, before the exercise
    assert sources[start + 1].startswith("**Write**")  # the statement
    assert "raise NotImplementedError" in sources[start + 2] and sources[start + 3] == "```{exercise-end}\n```"
    assert sources[start + 4] == "```{solution-start} 03_synthetic-exercise-1\n:class: dropdown\n```"
    assert "return 2 * x" in sources[start + 5] and sources[start + 6].startswith("Doubling is adding")
    assert sources[start + 7] == "```{solution-end}\n```" and sources[start + 8] == "check_double(double)"
    assert sources[1].startswith("```{admonition} In this lesson\n:class: tip\nBy the end")
    assert any(s.startswith("```{admonition} What to take away") for s in sources)
    assert "hide-input" in page.cells[2].metadata["tags"]  # papermill's parameters, folded
    assert sources[-1].startswith("## Sources") and "{cite:t}`mujika2018`" in sources[-1]
    outputs = [o for c in page.cells if c.cell_type == "code" for o in c.outputs]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 2 and all("Plotly.newPlot(" in h and len(h) < 100_000 for h in html)
    assert 'id="03_synthetic-figure-2"' in html[1] and '"sliders"' in html[1]
    assert sum(len(h) for h in html) < PLOTLY_JS / 30  # plotly.js is not in the lesson


def test_a_solution_without_an_exercise_is_reported():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]})])
    page, notes = lesson_copy(nb, "09_x")
    assert notes and "no exercise before it" in notes[0] and page.cells[0].source == "x = 1"


def test_every_lesson_has_its_papers():
    for key in ("01", "02", "03", "04", "05", "06", "07", "08"):
        assert any(key in paper["lessons"] for paper in PAPERS.values()), key
    assert set(PAPERS) == {"williams1989", "tallec2018", "mujika2018", "benzing2019", "menick2021",
                           "zucchet2023", "orvieto2023"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The synthetic lesson built into a site (Sphinx runs once for the tests below)."""
    reports = tmp_path_factory.mktemp("reports")
    synthetic_lesson(reports)
    synthetic_lesson(reports, "04_second")
    lines = []
    index = build(reports, progress=lines.append)
    return index.parent, lines


def test_site_builds_with_shared_plotly_and_local_math(site):
    folder, lines = site
    assert not [line for line in lines if "sphinx:" in line]  # no warning
    pages = {p.name for p in folder.glob("*.html")}
    assert {"index.html", "03_synthetic.html", "04_second.html", "notation.html", "bibliography.html",
            "search.html"} <= pages
    assert (folder / "_static" / "plotly.min.js").stat().st_size > PLOTLY_JS
    assert (folder / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    lesson = (folder / "03_synthetic.html").read_text()
    assert len(lesson) < 1_000_000 and lesson.count('src="_static/plotly.min.js') == 1
    assert "plotly.min.js" not in (folder / "index.html").read_text()  # only where a figure is drawn
    for page in pages:
        html = (folder / page).read_text()
        assert not re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', html), page
    # the conventions as Sphinx renders them
    assert 'class="solution dropdown' in lesson and 'class="exercise admonition"' in lesson
    assert "tag_hide-input" in lesson and "double: ok" in lesson
    assert 'class="proof proposition admonition"' in lesson and "Doubling is linear" in lesson  # sphinx-proof
    assert "In this lesson" in lesson and "What to take away" in lesson
    # previous/next, the sidebar, the roadmap, the bibliography and the notation page
    assert 'href="04_second.html"' in lesson and 'href="index.html"' in lesson
    index = (folder / "index.html").read_text()
    assert "Roadmap" in index and "How noisy are UORO" in index
    # the links to ../docs/notation.md and ../notebooks/04_second.ipynb, made local
    assert 'href="notation.html"' in lesson and re.search(r'href="04_second.html"><span[^>]*>lesson 4', lesson)
    bibliography = (folder / "bibliography.html").read_text()
    assert "optimal kronecker-sum approximation" in bibliography.lower() and "long-range dependencies" in bibliography
    notation = (folder / "notation.html").read_text()
    # docs/notation.md as a page: its three tables, each row in its table (a blank line once cut one in two)
    assert notation.count("<table") == 3 and re.search(r"<td[^>]*><p>nuclear norm", notation)


# --- the site in a real browser ----------------------------------------------------------------------

def test_browser_check_passes_the_site_and_moves_every_control(site, browser, tmp_path):
    from kfrtrl_lab.notebook.browser import check_page, check_search, site_interactions

    folder, _ = site
    problems, seen = check_page(browser, folder / "03_synthetic.html", screenshot=tmp_path / "lesson.png",
                                root=folder, interact=site_interactions(folder))
    assert problems == []
    assert len(seen["figures"]) == 2 and seen["moved"] == 3  # two sliders and the checkbox's buttons
    assert seen["formulas"] >= 3 and (tmp_path / "lesson.png").stat().st_size > 10_000
    assert check_search(browser, folder, "synthetic") == []


def test_browser_check_passes_the_site_as_a_web_server_serves_it(site, browser):
    from kfrtrl_lab.notebook.browser import check_page, serve

    folder, _ = site
    server = serve(folder)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for name in ("index.html", "03_synthetic.html"):
            problems, seen = check_page(browser, folder / name, screenshot=False, root=folder, served=base)
            assert problems == [], name
        assert len(seen["figures"]) == 2 and seen["formulas"] >= 3
    finally:
        server.shutdown()


def test_browser_check_catches_a_broken_link_and_a_dead_slider(site, browser, tmp_path):
    import shutil

    from kfrtrl_lab.notebook.browser import check_page, site_interactions

    folder, _ = site
    copy = tmp_path / "site"
    shutil.copytree(folder, copy)
    (copy / "04_second.html").unlink()  # the sidebar and the next button now lead nowhere
    html = (copy / "03_synthetic.html").read_text()
    # a slider whose steps do nothing
    (copy / "03_synthetic.html").write_text(html.replace('"method":"update"', '"method":"skip"'))
    problems, _ = check_page(browser, copy / "03_synthetic.html", screenshot=False, root=copy,
                             interact=site_interactions(copy))
    assert any(p.startswith("navigation link to a missing page") and "04_second.html" in p for p in problems)
    assert any("dragging slider 'a = ' changed nothing" in p for p in problems), problems


def test_headings_stay_out_of_boxes_exercises_and_dropdowns():
    """A directive cannot hold a section: a lesson's title in its objectives cell stays the page's
    title, a statement's heading stays a section before the exercise, a heading in a box or a
    solution becomes its title or a bold line; '#' lines in code blocks are code."""
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("# 5 · Title\n\n## Objectives\n\n- one\n\n### Later\n\n```python\n# a comment\n```",
           metadata={"tags": ["objectives"]}),
        md("## Exercise: double\n\nWrite it."),
        code("raise NotImplementedError", metadata={"tags": ["exercise"]}),
        md("## Why\n\nBecause.", metadata={"tags": ["solution"]}),
        code("check()", metadata={"tags": ["check"]}),
    ])
    page, _ = lesson_copy(nb, "05_x")
    sources = [c.source for c in page.cells]
    assert sources[0] == "# 5 · Title"
    # the box's fence is longer than the code block's
    assert sources[1].startswith("````{admonition} Objectives\n:class: tip\n- one\n\n**Later**\n\n```python\n# a comment")
    assert sources[1].endswith("\n```\n````")
    assert sources[2] == "## Exercise: double" and sources[3].startswith("```{exercise-start}")
    assert sources[4] == "Write it."
    assert sources[8] == "**Why**\n\nBecause."


def test_a_solution_after_the_check_is_still_its_exercises():
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("Do it."), code("raise NotImplementedError", metadata={"tags": ["exercise"]}),
        code("x = 1", metadata={"tags": ["solution"]}), code("check(x)", metadata={"tags": ["check"]}),
        md("Why it works.", metadata={"tags": ["solution"]}),
    ])
    page, notes = lesson_copy(nb, "05_x")
    sources = [c.source for c in page.cells]
    assert notes == [] and sources.count("```{solution-start} 05_x-exercise-1\n:class: dropdown\n```") == 2
    assert sources[-3:-1] == ["Why it works.", "```{solution-end}\n```"]  # then the Sources


def test_links_to_docs_and_lessons_become_the_sites_pages():
    pages = {"notation", "02_kron"}
    text = "[a](../docs/notation.md) [b](../notebooks/02_kron.ipynb#x) [c](../docs/other.md) [d](notation.md)"
    assert site_links(text, pages) == "[a](notation.md) [b](02_kron.ipynb#x) [c](../docs/other.md) [d](notation.md)"


def test_the_roadmap_reads_prerequisites_and_time_from_the_objectives():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 3 · T\n\n**Prerequisites.** Lesson 1 and\nlesson 2.\n\n**Time:** about 60 minutes.\n\nMore.",
        metadata={"tags": ["objectives"]})])
    row = roadmap_row(nb, "03_variance")
    assert row == {"question": LESSONS["03"]["question"], "before": "Lesson 1 and lesson 2",
                   "time": "about 60 minutes"}
    assert roadmap_row(nbformat.v4.new_notebook(), "03_x")["time"] == "40 min"  # no objectives: the table's
