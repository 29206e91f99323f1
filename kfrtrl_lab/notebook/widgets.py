"""Live controls for the notebooks. Each builder returns an :class:`Explorer`: its ``controls`` (the
widgets a test can move) and its ``figure`` (the figure for the current setting), so a test drives
it without a kernel.

In a notebook, ``display(explorer)`` shows the controls and, under them, an Output widget holding
the figure; every change recomputes the figure and replaces the widget's content (its ``outputs``
state: in JupyterLab only a widget can redraw after the cell has run, and setting the state
captures nothing, so a headless run cannot stall on it). The sliders report only on release
(``continuous_update=False``), so dragging does not queue a recomputation per position, and a
status line says when a recomputation is running and how long the last one took.

A static report (executed with ``reports.STATIC_REPORT`` set) has no kernel for the widgets to
talk to: there the explorer also displays :meth:`Explorer.static_figure`, one plotly figure whose
own sliders (buttons, for a checkbox) switch between figures that the same ``draw`` computed in
advance on a small grid: one control at a time, the others at their starting values.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import ipywidgets as widgets
import plotly.graph_objects as go

from . import experiments as ex
from . import figures

#: vertical room for one slider under the plot (its value, rail and labels), in pixels
SLIDER_PX = 85


class Explorer:
    """``controls`` (name -> widget) whose values are the keyword arguments of ``draw``.
    ``static_grid`` (name -> values) is what :meth:`static_figure` offers by default; without it,
    every option of each slider and both states of each checkbox (other controls stay fixed)."""

    def __init__(self, controls: dict, draw: Callable[..., go.Figure], layout: Callable | None = None,
                 static_grid: dict | None = None):
        self.controls = controls
        self.static_grid = static_grid
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
        from IPython.display import Markdown, display

        from .reports import STATIC_REPORT

        self._show()
        bundle = self.widget._repr_mimebundle_()
        # what a static report shows in place of the live controls
        bundle["text/plain"] = f"[controls: {', '.join(self.controls)} — live in a running notebook]"
        display(bundle, raw=True)
        if os.environ.get(STATIC_REPORT):
            figure = self.static_figure()
            display(Markdown(self.static_note()))
            display(figure)

    # -- without a kernel -------------------------------------------------------------------------

    def static_axes(self, grid: dict | None = None) -> dict:
        """name -> the values the static figure offers for that control (the current one among
        them); controls with a single value are left out (they stay fixed)."""
        grid = grid if grid is not None else self.static_grid
        if grid is None:
            grid = {name: (c.options if isinstance(c, widgets.SelectionSlider) else (False, True))
                    for name, c in self.controls.items() if isinstance(c, (widgets.SelectionSlider, widgets.Checkbox))}
        current = self.values()
        axes = {}
        for name, values in grid.items():
            values = list(dict.fromkeys(values))
            if current[name] not in values:
                values.insert(0, current[name])
            if len(values) > 1:
                axes[name] = values
        return axes

    def static_settings(self, grid: dict | None = None) -> list[dict]:
        """The control values the static figure precomputes: the current setting, then, for each
        control in the grid, each of its values with the other controls as they are now."""
        current = self.values()
        settings = [current]
        for name, values in self.static_axes(grid).items():
            settings += [{**current, name: value} for value in values if value != current[name]]
        return settings

    def static_figure(self, grid: dict | None = None) -> go.Figure:
        """One figure holding the traces that ``draw`` returns at every setting of
        :meth:`static_settings`, each setting's shown only while it is selected. A slider per control
        of the grid (buttons, for a checkbox) selects a setting: its step shows that setting's traces,
        applies its layout (title, axes) and puts the other sliders back to their starting values,
        so what the sliders say is what is drawn. Plain plotly, no script of its own: the figure
        works the same in an HTML report, in the course site and in JupyterLab."""
        axes = self.static_axes(grid)
        current = self.values()
        settings = self.static_settings(grid)
        start = time.perf_counter()
        drawn = [self.figure] + [self._draw(**values) for values in settings[1:]]
        self.static_seconds = time.perf_counter() - start

        # every setting's traces one after the other; owner[i]: the setting trace i belongs to
        traces = [trace for fig in drawn for trace in fig.data]
        owner = [k for k, fig in enumerate(drawn) for _ in fig.data]

        def visible(k):
            return [(t.visible if t.visible is not None else True) if o == k else False for t, o in zip(traces, owner)]

        # the layout keys a step sets: whatever draw puts in its layouts, less what this figure owns
        # (None removes a key that another setting had)
        layouts = [fig.layout.to_plotly_json() for fig in drawn]
        own = {"template", "sliders", "updatemenus", "height", "margin"}
        keys = sorted({key for layout in layouts for key in layout} - own)
        buttons = [name for name in axes if isinstance(self.controls[name], widgets.Checkbox)]
        sliders = [name for name in axes if name not in buttons]

        def menu(name):
            return f"updatemenus[{buttons.index(name)}]" if name in buttons else f"sliders[{sliders.index(name)}]"

        def step(name, value):
            k = settings.index({**current, name: value})
            relayout = {key: layouts[k].get(key) for key in keys}
            relayout.update({f"{menu(other)}.active": axes[other].index(current[other]) for other in axes if other != name})
            return dict(method="update", args=[{"visible": visible(k)}, relayout])

        def label(name):
            return getattr(self.controls[name], "description", "") or name

        figure = go.Figure(data=traces, layout=drawn[0].layout)
        for trace, shown in zip(figure.data, visible(0)):
            trace.visible = shown
        figure.update_layout(
            sliders=[dict(active=axes[name].index(current[name]), currentvalue=dict(prefix=f"{label(name)} = "),
                          x=0, len=1.0, y=0, yanchor="top", pad=dict(t=60 + SLIDER_PX * i),
                          steps=[dict(label=_format(value), **step(name, value)) for value in axes[name]])
                     for i, name in enumerate(sliders)],
            updatemenus=[dict(type="buttons", direction="right", showactive=True, x=0, xanchor="left",
                              y=1.02 + 0.1 * i, yanchor="bottom", active=axes[name].index(current[name]),
                              buttons=[dict(label=f"{label(name)}: {_format(value)}", **step(name, value))
                                       for value in axes[name]])
                         for i, name in enumerate(buttons)])
        if sliders:
            figure.update_layout(height=(drawn[0].layout.height or 480) + SLIDER_PX * len(sliders),
                                 margin=dict(b=80 + SLIDER_PX * len(sliders)))
        return figure

    def static_note(self) -> str:
        """What the reader of a static page is told above :meth:`static_figure`: what it holds and
        which controls stay fixed."""
        axes = self.static_axes()
        fixed = [f"{name} = {_format(value)}" for name, value in self.values().items() if name not in axes]
        return (f"*A precomputed copy of the explorer ({len(self.static_settings())} settings): each slider or "
                f"button of the figure changes one control while the others stay at their starting values"
                + (f"; fixed here: {'; '.join(fixed)}" if fixed else "")
                + ". Click a legend entry to hide its line; the live controls run in JupyterLab.*")


def _format(value) -> str:
    """A control value as a short label (a tuple of choices as a comma-separated list)."""
    if isinstance(value, (tuple, list)):
        return ", ".join(map(_format, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    """Relative error against T for a random RHN: sliders for n, the longest T, the number of
    samples, and the estimators. The starting setting (n, T_max, samples: the options nearest to
    them) answers in well under a second; the largest ones take longer, and the status line says so."""
    samples_options = sorted(set(samples_options))
    start = {"n": _nearest(n_options, n), "T_max": _nearest(lengths, T_max), "samples": _nearest(samples_options, samples)}

    def draw(n, T_max, samples, methods):
        Ts = [T for T in lengths if T <= T_max] or [min(lengths)]
        if not methods:
            return _nothing_chosen("estimator")
        rows = ex.variance_sweep([n], Ts, methods=tuple(methods), samples=samples, seed=seed)
        return figures.variance_figure(rows, x="T", title=f"Relative error, random RHN n={n}, {samples} samples")

    controls = {
        "n": _slider(n_options, start["n"], "n"),
        "T_max": _slider(lengths, start["T_max"], "T max"),
        "samples": _slider(samples_options, start["samples"], "samples"),
        "methods": widgets.SelectMultiple(options=list(methods), value=tuple(methods), rows=len(methods),
                                          description="estimators"),
    }
    # the number of samples only sharpens the estimate, at a cost: the static copy keeps it fixed
    return Explorer(controls, draw, static_grid={"n": n_options, "T_max": lengths})


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
    """The variance of one KF step against p while the sizes of the terms change: scale ‖u‖, ‖M‖
    (= ‖H A‖) and ‖D‖ and watch p* = sqrt(‖M‖/‖u‖)·sqrt(‖x̂‖/‖D‖) move with the minimum."""
    scales = (0.1, 0.3, 1.0, 3.0, 10.0)

    def draw(scale_u, scale_B, scale_D):
        curve = ex.variance_vs_p(seed=seed, points=points, scale_u=scale_u, scale_B=scale_B, scale_D=scale_D)
        fig = figures.variance_vs_p_figure(curve)
        return fig.update_layout(title=f"One KF step: p* = {curve['p_star']:.3g} "
                                       f"(‖u‖ ×{scale_u:g}, ‖M‖ ×{scale_B:g}, ‖D‖ ×{scale_D:g})")

    controls = {"scale_u": _slider(scales, 1.0, "‖u‖ ×"), "scale_B": _slider(scales, 1.0, "‖M‖ ×"),
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


# -- notebook 8 -----------------------------------------------------------------------------------

#: the explorer's methods: a label -> (cell of every layer, estimator of every layer)
STACK_METHODS = {"lru + rtrl": ("lru", "rtrl"), "rhn + rtrl": ("rhn", "rtrl"), "rhn + snap-1": ("rhn", "snap-1"),
                 "rhn + kf-rtrl": ("rhn", "kf-rtrl")}


def depth_explorer(depth_options=(1, 2, 3, 4), rings=tuple(ex.LAMBDA_RINGS), methods=tuple(STACK_METHODS),
                   T: int = 30, width: int = 8, hidden: int = 8, seed: int = 0, depth: int = 4,
                   ring: str = "0.9–0.999", method: str = "lru + rtrl") -> Explorer:
    """The layer-wise gradient's relative error against BPTT through the whole stack, for stacks of
    1 … ``depth`` layers (float64, one one-hot sequence of length T), per parameter group; sliders for
    the deepest stack, the ring of |λ| (the LRU's; an RHN stack ignores it) and the cell + method of
    every layer. A stochastic method (kf-rtrl) shows one draw: its noise and its bias together."""
    for name, value, options in (("depth", depth, depth_options), ("ring", ring, rings), ("method", method, methods)):
        if value not in options:
            raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    unknown = [m for m in methods if m not in STACK_METHODS]
    if unknown:
        raise ValueError(f"methods must be among {list(STACK_METHODS)}, got {unknown}")

    def draw(depth, ring, method):
        cell, estimator = STACK_METHODS[method]
        depths = [L for L in depth_options if L <= depth]
        rows = ex.layerwise_bias_by_depth(depths, cell, estimator, width, hidden, T, ring, seed=seed)
        where = f"|λ| on [{ring.replace('–', ', ')}]" if cell == "lru" else "the RHN ignores the ring"
        return figures.depth_bias_figure(rows, title=f"Layer-wise {estimator} on a stack of {cell.upper()} layers "
                                                     f"({where}), T={T}")

    controls = {"depth": _slider(depth_options, depth, "deepest L"), "ring": _slider(rings, ring, "|λ| ring"),
                "method": _slider(methods, method, "method")}
    return Explorer(controls, draw)
