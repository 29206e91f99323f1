"""The notebooks' package side: committed without outputs, parameterised, with claims; the
figures, the slider callbacks and the offline HTML export, all without a kernel."""

import re
from pathlib import Path

import nbformat
import pytest

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.reports import notebooks, strip, to_html

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT / "notebooks")


def test_the_sequence_is_complete():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    dirty = strip(nbformat.read(path, as_version=4))  # outputs, counts, metadata JupyterLab adds
    assert not dirty, "run `make strip` before committing; " + "; ".join(dirty)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    lines = [line for line in params[0].source.splitlines() if line.strip()]
    assert lines[0].startswith('profile: str = "full"')
    for line in lines:  # typed, commented defaults
        assert re.match(r"^\w+: [\w\[\], ]+ = .+#.+", line), line
    claims = [c for c in code if "nbval-check-output" in c.metadata.get("tags", [])]
    assert claims and all("assert" in c.source for c in claims)
    assert any("print(json.dumps(" in c.source for c in code)  # the run prints its parameters
    # no algorithm code in the notebooks: they call the package
    assert not any(re.search(r"^\s*(def|class) ", c.source, flags=re.M) for c in code)


def test_variance_vs_p_has_its_minimum_at_p_star():
    curve = ex.variance_vs_p(seed=3, points=81)
    assert abs(curve["p_grid_min"] / curve["p_star"] - 1) < curve["grid_ratio"] - 1
    assert curve["variance_at_p_star"] <= min(curve["variance"]) + 1e-12
    fig = figures.variance_vs_p_figure(curve)
    assert fig.data[1].x[0] == curve["p_star"] and fig.layout.xaxis.type == "log"


def test_variance_sweep_and_figure():
    rows = ex.variance_sweep([4, 8], [3, 6], samples=20, seed=0)
    assert {(r["method"], r["n"], r["T"]) for r in rows} == {(m, n, T) for m in ("kf-rtrl", "uoro")
                                                             for n in (4, 8) for T in (3, 6)}
    fig = figures.variance_figure(rows, x="n")
    assert len(fig.data) == 4 and fig.layout.yaxis.type == "log"
    assert list(fig.data[0].x) == [4, 8]


def test_variance_explorer_sliders_redraw_the_figure():
    from kfrtrl_lab.notebook.widgets import variance_explorer

    widget, handles = variance_explorer(n_options=(4, 6), lengths=(3, 5), samples_options=(10, 20))
    first = handles["figure"]
    assert handles["output"] in widget.children  # the figure area sits under the controls
    assert [t.name for t in first.data] == ["kf-rtrl (n=6)", "uoro (n=6)"]
    handles["n"].value = 4
    assert handles["figure"] is not first and "n=4" in handles["figure"].layout.title.text
    handles["methods"].value = ("uoro",)
    assert [t.name for t in handles["figure"].data] == ["uoro (n=4)"]
    handles["T_max"].value = 3
    assert list(handles["figure"].data[0].x) == [3]


def test_training_and_cost_figures():
    summary = {"config": {"task": "copy", "method": "kf-rtrl", "hidden": 8}, "steps_done": 20,
               "curve": [{"step": 10, "t_max": 1}, {"step": 20, "t_max": 2}]}
    fig = figures.training_figure([summary], "t_max", fresh=[summary])
    assert [t.name for t in fig.data] == ["kf-rtrl n=8", "kf-rtrl n=8 (fresh)", "OK reference (official logs)"]
    rows = [{"method": "a", "n": n, "ms_per_step": n**3} for n in (8, 16, 32)]
    assert "slope 3.00" in figures.cost_figure(rows).data[0].name


def test_html_report_needs_no_network(tmp_path):
    figures.use_offline_renderer()
    import plotly.io as pio

    bundle = pio.renderers["kfrtrl_offline"].to_mimebundle(figures.cost_figure(
        [{"method": "a", "n": 2, "ms_per_step": 1.0}, {"method": "a", "n": 4, "ms_per_step": 2.0}]).to_dict())
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(r"$$F_t = \hat x_t \otimes D_t$$"),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output("display_data", data=bundle)]),
    ])
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    html = to_html(path, tmp_path).read_text()
    assert (tmp_path / "mathjax" / "tex-chtml-full.js").exists()
    assert 'src="mathjax/tex-chtml-full.js"' in html
    assert not re.findall(r'<script[^>]+src="https?://', html)  # no script from a CDN
    assert not re.findall(r'import\("https?://', html)  # nor a module imported from one
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js itself is in the page
