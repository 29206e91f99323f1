"""The report machinery: plotly.js once per page, the page's title, widgets and MathJax with no
CDN, per-cell progress with no kernel warning, and the notebooks' committed form."""

from pathlib import Path

import nbformat
import plotly.graph_objects as go

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
