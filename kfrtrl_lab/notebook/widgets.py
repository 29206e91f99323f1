"""Live controls for the notebooks. Each builder returns an :class:`Explorer`: its ``controls`` (the
widgets a test can move) and its ``figure`` (the figure for the current setting), so a test drives
it without a kernel.

In a notebook, ``display(explorer)`` shows the controls and, under them, an Output widget holding
the figure; every change recomputes the figure and replaces the widget's content (its ``outputs``
state: in JupyterLab only a widget can redraw after the cell has run, and setting the state
captures nothing, so a headless run cannot stall on it). The sliders report only on release
(``continuous_update=False``), so dragging does not queue a recomputation per position, and a
status line says when a recomputation is running and how long the last one took. A static report
(executed with ``reports.STATIC_REPORT`` set) cannot show widgets: there the first figure is also
displayed as a plain output.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import ipywidgets as widgets
import plotly.graph_objects as go

from . import experiments as ex
from . import figures


class Explorer:
    """``controls`` (name -> widget) whose values are the keyword arguments of ``draw``."""

    def __init__(self, controls: dict, draw: Callable[..., go.Figure], layout: Callable | None = None):
        self.controls = controls
        self._draw = draw
        self.status = widgets.HTML()
        self.output = widgets.Output()
        for control in controls.values():
            if hasattr(control, "continuous_update"):
                control.continuous_update = False
            control.observe(self.update, names="value")
        self.widget = widgets.VBox([(layout or _default_layout)(controls, self.status), self.output])
        self.seconds = 0.0
        self.figure = self._compute()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _compute(self) -> go.Figure:
        start = time.perf_counter()
        figure = self._draw(**self.values())
        self.seconds = time.perf_counter() - start
        return figure

    def update(self, change=None) -> go.Figure:
        """Recompute the figure for the controls' values and replace the displayed one."""
        self.status.value = "<i>computing…</i>"
        self.figure = self._compute()
        self._show()
        self.status.value = f"<small>recomputed in {self.seconds:.1f} s</small>"
        return self.figure

    def _show(self) -> None:
        """Put the figure into the Output widget (nothing to do without a running kernel)."""
        from IPython import get_ipython
        if get_ipython() is not None:
            # the figure's own mime bundle (IPython's formatter would display a plotly figure
            # itself, as a plain output above the widget, and return nothing)
            data = self.figure._repr_mimebundle_()
            self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)

    def _ipython_display_(self):
        from IPython.display import display

        from .reports import STATIC_REPORT

        self._show()
        bundle = self.widget._repr_mimebundle_()
        # what a static report shows in place of the live controls
        bundle["text/plain"] = (f"[controls: {', '.join(self.controls)} — live in a running notebook; "
                                f"this page shows the figure for the first setting]")
        display(bundle, raw=True)
        if os.environ.get(STATIC_REPORT):
            display(self.figure)


def _default_layout(controls, status):
    return widgets.VBox([widgets.HBox(list(controls.values())), status])


def _nothing_chosen(what: str):
    """An empty figure that says why it is empty (every option of a list deselected)."""
    import plotly.graph_objects as go

    return go.Figure(layout=dict(title=f"Nothing to draw: choose at least one {what}", template="plotly_white"))


def _slider(options, value, description):
    return widgets.SelectionSlider(options=list(options), value=value, description=description)


# -- notebook 3 -----------------------------------------------------------------------------------

def _nearest(options, value):
    return min(options, key=lambda o: abs(o - value))


def variance_explorer(n_options=(8, 16, 32), lengths=(5, 10, 20), samples_options=(25, 50, 100),
                      methods=("kf-rtrl", "uoro"), seed: int = 0, n: int = 16, T_max: int = 20,
                      samples: int = 50) -> Explorer:
    """Relative variance against T for a random RHN: sliders for n, the longest T, the number of
    samples, and the estimators. The starting setting (n, T_max, samples: the options nearest to
    them) answers in well under a second; the largest ones take longer, and the status line says so."""
    samples_options = sorted(set(samples_options))
    start = {"n": _nearest(n_options, n), "T_max": _nearest(lengths, T_max), "samples": _nearest(samples_options, samples)}

    def draw(n, T_max, samples, methods):
        Ts = [T for T in lengths if T <= T_max] or [min(lengths)]
        if not methods:
            return _nothing_chosen("estimator")
        rows = ex.variance_sweep([n], Ts, methods=tuple(methods), samples=samples, seed=seed)
        return figures.variance_figure(rows, x="T", title=f"Relative variance, random RHN n={n}, {samples} samples")

    controls = {
        "n": _slider(n_options, start["n"], "n"),
        "T_max": _slider(lengths, start["T_max"], "T max"),
        "samples": _slider(samples_options, start["samples"], "samples"),
        "methods": widgets.SelectMultiple(options=list(methods), value=tuple(methods), rows=len(methods),
                                          description="estimators"),
    }
    return Explorer(controls, draw)


# -- notebook 7 -----------------------------------------------------------------------------------

FAMILIES = ("ok", "ok-official", "kf-avg", "kf-rtrl", "uoro", "snap-1")


def family_explorer(r_options=(1, 2, 4, 8), n_options=(8, 16, 32), lengths=(5, 10, 20, 40), samples: int = 100,
                    families=FAMILIES, seed: int = 0, r: int = 2, n: int = 16, T_max: int = 20) -> Explorer:
    """Relative error against T for the chosen estimators at rank r (OK-r, KF-AVG-r; the others have
    no rank) on a random RHN of size n; sliders for r, n and the longest T."""

    def draw(r, n, T_max, families):
        Ts = [T for T in lengths if T <= T_max] or [min(lengths)]
        if not families:
            return _nothing_chosen("estimator")
        rows = ex.rank_sweep([n], [r], Ts, families=tuple(families), samples=samples, seed=seed)
        return figures.variance_figure(rows, x="T", title=f"Relative error against T: r={r}, random RHN n={n}")

    controls = {
        "r": _slider(r_options, _nearest(r_options, r), "r"),
        "n": _slider(n_options, _nearest(n_options, n), "n"),
        "T_max": _slider(lengths, _nearest(lengths, T_max), "T max"),
        "families": widgets.SelectMultiple(options=list(families), value=("ok", "kf-avg", "snap-1"),
                                           rows=len(families), description="estimators"),
    }
    return Explorer(controls, draw)


# -- notebook 2 -----------------------------------------------------------------------------------

def kron_step_explorer(seed: int = 0, points: int = 61) -> Explorer:
    """The variance of one KF step against p while the sizes of the terms change: scale ‖u‖, ‖B‖
    (= ‖H A‖) and ‖D‖ and watch p* = sqrt(‖B‖/‖u‖)·sqrt(‖x̂‖/‖D‖) move with the minimum."""
    scales = (0.1, 0.3, 1.0, 3.0, 10.0)

    def draw(scale_u, scale_B, scale_D):
        curve = ex.variance_vs_p(seed=seed, points=points, scale_u=scale_u, scale_B=scale_B, scale_D=scale_D)
        fig = figures.variance_vs_p_figure(curve)
        return fig.update_layout(title=f"One KF step: p* = {curve['p_star']:.3g} "
                                       f"(‖u‖ ×{scale_u:g}, ‖B‖ ×{scale_B:g}, ‖D‖ ×{scale_D:g})")

    controls = {"scale_u": _slider(scales, 1.0, "‖u‖ ×"), "scale_B": _slider(scales, 1.0, "‖B‖ ×"),
                "scale_D": _slider(scales, 1.0, "‖D‖ ×")}
    return Explorer(controls, draw)


# -- notebooks 4 and 5 ------------------------------------------------------------------------------

def runs_explorer(summaries: list[dict], metric: str, title: str = "", log_steps: bool = False) -> Explorer:
    """Overlay the chosen configurations (and seeds) of committed run summaries, with the reference
    of each estimator shown."""
    from ..results import run_group

    groups = list(dict.fromkeys(run_group(s) for s in summaries))
    seeds = sorted({s["config"]["seed"] for s in summaries})

    def draw(configurations, seeds, log_steps):
        chosen = [s for s in summaries if run_group(s) in configurations and s["config"]["seed"] in seeds]
        if not chosen:
            return _nothing_chosen("run and seed")
        return figures.training_figure(chosen, metric, title=title, log_x=log_steps)

    controls = {
        "configurations": widgets.SelectMultiple(options=groups, value=tuple(groups), description="runs",
                                                 rows=min(len(groups), 8), layout=widgets.Layout(width="420px")),
        "seeds": widgets.SelectMultiple(options=seeds, value=tuple(seeds), rows=min(len(seeds), 8),
                                        description="seeds"),
        "log_steps": widgets.Checkbox(value=log_steps, description="log steps"),
    }
    return Explorer(controls, draw)


# -- notebook 6 -----------------------------------------------------------------------------------

def cost_model_explorer(methods=("rtrl", "kf-rtrl", "ok-16", "kf-avg-16", "uoro", "snap-1", "tbptt-16"),
                        input_size: int = 50) -> Explorer:
    """The cost model of :func:`experiments.step_cost_model`: work and state per step of every
    method for the chosen n and B."""
    import plotly.graph_objects as go

    def draw(n, batch):
        rows = [ex.step_cost_model(m, n, batch, input_size) for m in methods]
        fig = go.Figure()
        fig.add_trace(go.Bar(x=[r["method"] for r in rows], y=[r["flops"] / 1e9 for r in rows], name="GFLOP per step",
                             marker_color=[figures.method_color(r["method"]) for r in rows]))
        fig.add_trace(go.Bar(x=[r["method"] for r in rows], y=[r["state_MB"] for r in rows], name="state (MB)",
                             marker=dict(color=[figures.method_color(r["method"]) for r in rows], pattern_shape="/")))
        return fig.update_layout(barmode="group", template="plotly_white", showlegend=True,
                                 yaxis=dict(type="log", title="GFLOP per step / state MB", exponentformat="power"),
                                 title=f"Cost model: n={n}, B={batch}, m={input_size}")

    controls = {"n": _slider((32, 64, 128, 256, 512, 1024), 256, "n"),
                "batch": _slider((1, 8, 16, 32, 64, 128), 32, "B")}
    return Explorer(controls, draw)
