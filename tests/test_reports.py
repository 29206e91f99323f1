"""The report machinery: plotly.js once per page."""

import plotly.graph_objects as go

from kfrtrl_lab.notebook import figures

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
