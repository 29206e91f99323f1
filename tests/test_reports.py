"""The report machinery: plotly.js once per page, the page's title, widgets and MathJax with no
CDN, per-cell progress with no kernel warning, the notebooks' committed form, and the real-browser
check catching planted failures (those tests need Chromium, and skip, saying so, without it)."""

import shutil
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.reports import WIDGET_NOTE, execute, strip, to_html

ROOT = Path(__file__).resolve().parents[1]
PLOTLY_JS = 3_000_000  # plotly.min.js is ~4.8 MB; a figure without it is a few kB


def figure_bundles(n):
    """What a notebook stores for ``n`` figures shown one after another (plotly copies the
    renderer for each, as it does in a kernel)."""
    figures.use_offline_renderer()
    return [go.Figure(go.Scatter(x=[1, 2, 3], y=[i, i + 2, i + 1], name=f"line {i}"))._repr_mimebundle_()
            for i in range(n)]


def test_plotlyjs_goes_into_the_first_figure_only():
    first, second, third = figure_bundles(3)
    assert len(first["text/html"]) > PLOTLY_JS
    assert len(second["text/html"]) < 100_000 and len(third["text/html"]) < 100_000
    assert "Plotly.newPlot" in third["text/html"]
    assert "application/vnd.plotly.v1+json" in third  # what JupyterLab draws itself


def report_notebook(tmp_path, markdown=r"# 7 · A *title*" "\n\n" r"$\mathbb{E}\|\hat g - g\|^2$", n_figures=3,
                    widget=True):
    """A small executed notebook as papermill leaves it: math, figures, a widget view and the
    widget state in the metadata."""
    outputs = [nbformat.v4.new_output("display_data", data=b) for b in figure_bundles(n_figures)]
    if widget:
        outputs.insert(0, nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "VBox(children=(HBox(…"}))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown),
                                         nbformat.v4.new_code_cell("show()", outputs=outputs)])
    if widget:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    path = tmp_path / "07_example.ipynb"
    nbformat.write(nb, path)
    return path


def test_page_carries_plotlyjs_once_math_and_its_title_with_no_cdn(tmp_path):
    html = to_html(report_notebook(tmp_path), tmp_path).read_text()
    assert "<title>7 · A *title*</title>" in html
    assert html.count("Plotly.newPlot") == 3 and PLOTLY_JS < len(html) < 6 * 1024 * 1024
    assert (tmp_path / "mathjax" / "tex-chtml-full.js").exists()
    assert list((tmp_path / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert 'src="mathjax/tex-chtml-full.js"' in html
    for cdn in ("unpkg.com", "cdnjs", "require.min.js", "widget-state+json", "VBox(children"):
        assert cdn not in html
    assert WIDGET_NOTE in html


def test_title_falls_back_to_the_file_name(tmp_path):
    html = to_html(report_notebook(tmp_path, markdown="no heading", n_figures=1, widget=False), tmp_path).read_text()
    assert "<title>07_example</title>" in html


def test_execute_reports_every_cell_and_no_kernel_warning(tmp_path, capfd):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile: str = "full"  # p', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("x = len(profile)"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "in" / "01_x.ipynb"
    src.parent.mkdir()
    nbformat.write(nb, src)
    lines = []
    out = execute(src, tmp_path / "out", profile="quick", progress=lines.append)
    assert [line.split(" s  ")[1] for line in lines] == ['profile: str = "full"  # p', "# Parameters", "x = len(profile)"]
    assert all(line.startswith(f"  [ {i}/3]") for i, line in enumerate(lines, 1))
    assert nbformat.read(out, as_version=4).cells[-1].execution_count == 3
    assert "TCP" not in capfd.readouterr().err  # IPC transport: ipykernel has nothing to warn about


# --- the committed form of the notebooks --------------------------------------------------------

def test_strip_removes_what_jupyterlab_adds_and_names_it():
    path = ROOT / "notebooks" / "03_variance_uoro_vs_kf.ipynb"
    clean = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    # what JupyterLab's save wrote in the ui-check, plus widget state and cell state
    nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb.metadata["language_info"].update(version="3.11.7", mimetype="text/x-python", file_extension=".py")
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[code].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb.cells[code].metadata["scrolled"] = True
    nb.cells[code].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[code].execution_count = 4
    removed = strip(nb)
    cell_id = nb.cells[code].id
    for expected in ("notebook metadata 'widgets'", "notebook metadata 'kernelspec'", "'language_info'",
                     f"cell {code} (id {cell_id}, 'profile: str", "metadata 'execution'", "metadata 'scrolled'",
                     "outputs", "execution_count"):
        assert any(expected in line for line in removed), expected
    assert nb == clean and strip(nb) == []


def test_strip_leaves_a_clean_file_byte_for_byte(tmp_path):
    for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        if not strip(nb):  # the clean ones (the committed-form test names any other)
            nbformat.write(nb, tmp_path / path.name)
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


# --- the real-browser check ---------------------------------------------------------------------

def page(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.html"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title></head>"
                    f"<body>{body}</body></html>")
    return path


def figure_page(folder: Path, name: str, fig) -> Path:
    # plotly.js as a file beside the page keeps the planted pages small
    shutil.copy(Path(pio.__file__).parents[1] / "package_data" / "plotly.min.js", folder)
    path = folder / f"{name}.html"
    path.write_text(pio.to_html(fig, include_plotlyjs="directory"))
    return path


def test_browser_check_passes_a_real_report_page(tmp_path, browser):
    from kfrtrl_lab.notebook.browser import check_page

    html = to_html(report_notebook(tmp_path), tmp_path)
    problems, seen = check_page(browser, html)
    assert problems == []
    assert seen["formulas"] == 1 and [f["traces"] for f in seen["figures"]] == [1, 1, 1]
    assert html.with_suffix(".png").stat().st_size > 10_000  # the screenshot beside the page


@pytest.mark.parametrize("planted, expected", [
    ("<p>x</p><script>console.error('planted failure')</script>", "console error: planted failure"),
    ("<script>undefined_function()</script>", "uncaught exception"),
    ('<img src="http://example.com/a.png">', "request outside the page's folder: http://example.com/a.png"),
    ('<script src="https://unpkg.com/x/embed-amd.js"></script>', "request outside the page's folder: https://unpkg"),
    ('<img src="../elsewhere.png">', "request outside the page's folder: file://"),
    ('<link rel="stylesheet" href="missing.css">', "failed to load file://"),
])
def test_browser_check_catches_planted_page_failures(tmp_path, browser, planted, expected):
    from kfrtrl_lab.notebook.browser import check_page

    problems, _ = check_page(browser, page(tmp_path, "planted", planted), screenshot=False)
    assert any(p.startswith(expected) for p in problems), problems


def test_browser_check_catches_empty_and_undrawn_figures(tmp_path, browser):
    from kfrtrl_lab.notebook.browser import check_page

    good = figure_page(tmp_path, "good", go.Figure([go.Scatter(x=[1, 2], y=[1, 2], name="a"),
                                                    go.Bar(x=[1, 2], y=[2, 1], name="b")]))
    assert check_page(browser, good, screenshot=False)[0] == []
    cases = {
        "empty": (go.Figure([go.Scatter(x=[1, 2], y=[1, 2], name="data"), go.Scatter(x=[], y=[], name="nothing")]),
                  "no points drawn for 'nothing'"),
        "one_point_line": (go.Figure(go.Scatter(x=[400], y=[4.4], mode="lines", name="fresh")),
                           "no points drawn for 'fresh'"),
        "log_of_negative": (go.Figure(go.Scatter(x=[1, 2], y=[-1, 0], name="neg"), layout={"yaxis_type": "log"}),
                            "no points drawn for 'neg'"),
    }
    for name, (fig, expected) in cases.items():
        problems, _ = check_page(browser, figure_page(tmp_path, name, fig), screenshot=False)
        assert any(expected in p for p in problems), (name, problems)
    # a figure whose plotly.js never came: not drawn (and the page's own error besides)
    undrawn = page(tmp_path, "undrawn", '<div id="f" class="plotly-graph-div"></div>'
                                        '<script>Plotly.newPlot("f", [{"y": [1, 2]}])</script>')
    problems, _ = check_page(browser, undrawn, screenshot=False)
    assert any("was not drawn" in p for p in problems) and any("uncaught exception" in p for p in problems)


def test_browser_check_catches_math_errors_missing_fonts_and_size(tmp_path, browser):
    from kfrtrl_lab.notebook.browser import check_page

    bad_tex = to_html(report_notebook(tmp_path, markdown=r"# T" "\n\n" r"$\undefinedmacro x$", n_figures=1,
                                      widget=False), tmp_path)
    problems, _ = check_page(browser, bad_tex, screenshot=False)
    assert any(p.startswith("MathJax error: Undefined control sequence") for p in problems), problems

    # the fonts of the local MathJax: delete the one an italic x needs, as a short copy would
    (tmp_path / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Math-Italic.woff").unlink()
    no_font = to_html(report_notebook(tmp_path, markdown="# T\n\n$x$", n_figures=1, widget=False), tmp_path)
    problems, _ = check_page(browser, no_font, screenshot=False)
    assert any(p.startswith("failed to load file://") and "MathJax_Math-Italic.woff" in p for p in problems), problems

    problems, _ = check_page(browser, no_font, max_mb=0.5, screenshot=False)
    assert any(p.startswith("page is 4.") and "limit 0.5 MB" in p for p in problems), problems


def test_main_builds_the_course_site_after_the_notebooks(tmp_path, monkeypatch):
    """`reports` (what `make reports` runs) ends with the site, built from every executed notebook
    in its output folder; --no-site leaves it out. Execution is replaced by a copy here."""
    from kfrtrl_lab.notebook import reports

    source = tmp_path / "notebooks"
    source.mkdir()
    for name in ("01_first", "02_second"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}\n\n$x^2$")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, source / f"{name}.ipynb")
    everywhere = reports.notebooks
    monkeypatch.setattr(reports, "notebooks", lambda folder=source: everywhere(folder))
    out = tmp_path / "reports"
    out.mkdir()
    monkeypatch.setattr(reports, "execute", lambda nb, folder, **_: Path(shutil.copy(nb, folder)))
    assert reports.main(["--out", str(out), "--no-site"]) == 0
    assert (out / "01_first.html").exists() and not (out / "site").exists()
    assert reports.main(["--out", str(out), "--only", "02"]) == 0
    site = out / "site"
    assert {"01_first.html", "02_second.html", "index.html"} <= {p.name for p in site.glob("*.html")}
