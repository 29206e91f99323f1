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
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08"]


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
    # no bookkeeping code in the notebooks: they call the package. Functions stand only where a
    # student writes or reads them (exercises, their solutions, and code tagged lesson-code,
    # which a check or claim cell compares with the package)
    readable = {"exercise", "solution", "lesson-code"}
    assert not any(re.search(r"^\s*(def|class) ", c.source, flags=re.M) for c in code
                   if not readable & set(c.metadata.get("tags", [])))


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
    for r in rows:  # the whole error is bias² plus variance
        assert r["relative_error"] == pytest.approx(r["bias2"] + r["spread"], rel=1e-9)
    fig = figures.variance_figure(rows, x="n")
    assert len(fig.data) == 4 and fig.layout.yaxis.type == "log"
    assert list(fig.data[0].x) == [4, 8]
    assert fig.layout.xaxis.title.text == "hidden size n" and fig.layout.showlegend


def test_explorers_redraw_the_figure_when_a_control_moves():
    from kfrtrl_lab.notebook.widgets import family_explorer, variance_explorer

    explorer = variance_explorer(n_options=(4, 6), lengths=(3, 5), samples_options=(10, 20))
    first = explorer.figure
    assert [t.name for t in first.data] == ["kf-rtrl (n=6)", "uoro (n=6)"]
    assert explorer.controls["n"].continuous_update is False  # dragging does not queue recomputations
    explorer.controls["n"].value = 4
    assert explorer.figure is not first and "n=4" in explorer.figure.layout.title.text
    explorer.controls["methods"].value = ("uoro",)
    assert [t.name for t in explorer.figure.data] == ["uoro (n=4)"]
    explorer.controls["T_max"].value = 3
    assert list(explorer.figure.data[0].x) == [3]
    assert "recomputed" in explorer.status.value
    explorer.controls["methods"].value = ()
    assert not explorer.figure.data and "choose at least one" in explorer.figure.layout.title.text

    family = family_explorer(r_options=(1, 2), n_options=(4, 6), lengths=(3, 5), samples=10)
    assert {t.name for t in family.figure.data} == {"ok-2 (n=6)", "kf-avg-2 (n=6)", "snap-1 (n=6)"}
    family.controls["r"].value = 1
    assert {t.name for t in family.figure.data} == {"ok-1 (n=6)", "kf-avg-1 (n=6)", "snap-1 (n=6)"}


def test_family_explorer_answers_within_two_seconds_at_its_defaults():
    import time

    from kfrtrl_lab.notebook.widgets import family_explorer

    start = time.perf_counter()
    explorer = family_explorer()
    explorer.controls["r"].value = 4
    assert (time.perf_counter() - start) / 2 < 2.0  # two figures computed; a loaded CI core still fits


def test_training_and_cost_figures():
    summary = {"config": {"task": "copy", "method": "kf-rtrl", "hidden": 8, "batch": 4, "clip": 1.0, "seed": 0},
               "steps_done": 20, "curve": [{"step": 10, "t_max": 1}, {"step": 20, "t_max": 2}]}
    fig = figures.training_figure([summary], "t_max")
    names = [t.name for t in fig.data]
    assert names[0] == "kf-rtrl n=8 B=4 clip 1 (seed 0)"
    assert any("KF-RTRL paper" in name for name in names)  # its own estimator's reference only
    assert not any("OK" in name for name in names)
    seeds = [dict(summary, config=dict(summary["config"], seed=s, method="ok-16-official"),
                  curve=[{"step": 10, "t_max": 1 + s}, {"step": 20, "t_max": 2 + s}]) for s in range(3)]
    names = [t.name for t in figures.training_figure(seeds, "t_max").data]
    assert "ok-16-official n=8 B=4 clip 1: range over 3 seeds" in names
    assert "OK-16 (official scaling), official OK code logs, 5 runs" in names
    rows = [{"method": "a", "n": n, "ms_per_step": n**3} for n in (8, 16, 32)]
    assert "slope 3.00" in figures.cost_figure(rows).data[0].name
    assert figures.method_color("tbptt-1") != figures.method_color("tbptt-16")
    assert figures.method_color("ok-r") != figures.method_color("kf-avg-r")  # families drawn side by side
    close = figures.cost_figure([{"method": "a", "n": n, "ms_per_step": v} for n, v in ((8, 0.78), (16, 0.80), (32, 0.95))])
    assert list(close.layout.yaxis.tickvals) == [0.78, 0.95]  # labels 3% apart would print over each other
    deep = figures.cost_figure([{"method": "a", "n": n, "ms_per_step": v} for n, v in ((8, 1e-30), (16, 10.0))])
    assert deep.layout.yaxis.dtick >= 4  # 31 decades: at most about eight labels, not 31 printed over each other
    decade = figures.training_figure([dict(summary, steps_done=200_000, curve=[{"step": s, "t_max": 1} for s in
                                                                               (20_000, 100_000, 200_000)])],
                                     "t_max", log_x=True, references=False)
    assert list(decade.layout.xaxis.ticktext) == ["20k", "50k", "100k", "200k"]  # one decade: 1-2-5 labels


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


def test_the_other_explorers_answer_their_controls():
    from kfrtrl_lab.notebook import widgets

    kron = widgets.kron_step_explorer(points=21)
    p_star = kron.figure.data[1].x[0]
    kron.controls["scale_u"].value = 10.0  # a longer u moves the optimum: p* ∝ 1/sqrt(‖u‖)
    assert kron.figure.data[1].x[0] == pytest.approx(p_star / 10**0.5)

    cost = widgets.cost_model_explorer(methods=("rtrl", "kf-rtrl"))
    big = list(cost.figure.data[0].y)
    cost.controls["n"].value = 64
    small = list(cost.figure.data[0].y)
    assert small[0] < big[0] / 150 and small[1] < big[1] / 30  # n / 4: RTRL's work falls like n^4, KF's like n^3

    runs = [{"config": {"task": "copy", "method": m, "hidden": 8, "batch": 4, "clip": 1.0, "seed": s},
             "steps_done": 20, "curve": [{"step": 10, "t_max": 1}, {"step": 20, "t_max": 2 + s}]}
            for m in ("kf-rtrl", "uoro") for s in (0, 1)]
    overlay = widgets.runs_explorer(runs, "t_max")
    assert any("kf-rtrl" in t.name for t in overlay.figure.data) and any("uoro" in t.name for t in overlay.figure.data)
    overlay.controls["configurations"].value = ("uoro n=8 B=4 clip 1",)
    overlay.controls["seeds"].value = (1,)
    assert [t.name for t in overlay.figure.data if "uoro" in t.name] == ["uoro n=8 B=4 clip 1 (seed 1)"]
    assert not any("kf-rtrl n=8" in t.name for t in overlay.figure.data)


def test_log_axes_label_decades_or_the_data_not_minor_digits():
    rows = [{"method": "kf-rtrl", "n": n, "T": 5, "relative_error": v} for n, v in ((8, 0.5), (16, 3.0), (32, 40.0))]
    fig = figures.variance_figure(rows, x="n")
    assert list(fig.layout.xaxis.tickvals) == [8, 16, 32]  # less than a decade: the data's own values
    assert list(fig.layout.yaxis.ticktext) == ["0.5", "1", "2", "5", "10", "20"]  # within two decades: 1-2-5
    rows[-1]["relative_error"] = 400.0
    assert figures.variance_figure(rows, x="n").layout.yaxis.dtick == 1  # three decades: powers of ten
