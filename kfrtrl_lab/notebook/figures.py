"""Plotly figures for the notebooks and reports: each takes rows or summaries, returns a Figure."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

from ..measure import loglog_slope
from ..results import format_steps, group_by_configuration, references_for, seed_band, steps_reached

class OfflineRenderer(MimetypeRenderer):
    """Notebook output that works with no network: plotly.js is embedded in the first figure of
    the session only (so a page carries it once; plotly's own notebook renderer links MathJax
    from a CDN), plus plotly's JSON mimetype, which JupyterLab renders natively."""

    def __init__(self):
        # plotly shallow-copies a renderer before each use, so a flag set on the copy would be
        # lost (and plotly.js embedded in every figure): the copies share this dict instead
        self.sent = {"plotlyjs": False}

    @property
    def plotlyjs_sent(self) -> bool:
        return self.sent["plotlyjs"]

    def to_mimebundle(self, fig_dict):
        html = pio.to_html(fig_dict, include_plotlyjs=not self.plotlyjs_sent, include_mathjax=False,
                           full_html=False, default_width="100%", default_height=480, validate=False)
        self.sent["plotlyjs"] = True
        return {"text/html": html,
                "application/vnd.plotly.v1+json": {"data": fig_dict.get("data", []),
                                                   "layout": fig_dict.get("layout", {})}}


def use_offline_renderer() -> None:
    """Make every figure displayed from now on self-contained (see :class:`OfflineRenderer`)."""
    pio.renderers["kfrtrl_offline"] = OfflineRenderer()
    pio.renderers.default = "kfrtrl_offline"


#: readable axis titles for the fields the experiments return
LABELS = {
    "t_max": "T_max reached by the curriculum", "valid_bpc": "validation bits per character",
    "loss_bits": "training loss (bits per step)",
    "ema_bits": "curriculum's average loss (bits)", "ms_per_step": "time per step (ms)",
    "state_MB": "estimator state (MB)", "peak_MB": "peak memory per step (MB)", "n": "hidden size n",
    "T": "sequence length T", "r": "rank r (Kronecker pairs per lane)", "step": "time steps",
    "relative_error": "relative error E‖ĝ − g‖² / ‖g‖²", "bias2": "bias² ‖Eĝ − g‖² / ‖g‖²",
    "spread": "variance E‖ĝ − Eĝ‖² / ‖g‖²", "cosine": "mean cosine of ĝ to g",
}
_FIXED = {"kf-rtrl": "#1f77b4", "uoro": "#d62728", "rtrl": "#2ca02c", "bptt": "#7f7f7f", "snap-1": "#e377c2",
          "bare H·A": "#000000"}
_FAMILIES = {  # family prefix: colours for increasing parameter (r, k)
    "ok-": ["#c5b0d5", "#9467bd", "#7b4ea3", "#5e2f8a", "#3f1567"],
    "kf-avg-": ["#9edae5", "#17becf", "#109aa8", "#0b7380", "#064d57"],
    "tbptt-": ["#ffbb78", "#ff7f0e", "#d35f00", "#a04500", "#6b2e00"],
}


def label(field: str) -> str:
    return LABELS.get(field, field)


def method_color(method: str) -> str:
    """A fixed colour per method; a family (ok-r, kf-avg-k, tbptt-k) darkens as its parameter grows."""
    if method in _FIXED:
        return _FIXED[method]
    for prefix, shades in _FAMILIES.items():
        rest = method[len(prefix):]
        digits = "".join(ch for ch in rest.split("-")[0] if ch.isdigit())
        if method.startswith(prefix):
            # a family as a whole ("ok-r", "kf-avg-k") takes its middle shade
            return shades[min(int(digits).bit_length() - 1, len(shades) - 1)] if digits else shades[len(shades) // 2]
    return "#8c564b"


def method_dash(method: str) -> str:
    return "dash" if method.endswith("-official") else "solid"


def _axis(field: str, values=(), log: bool = False) -> dict:
    """A titled axis. A log axis labels at most about eight powers of ten when the data span two
    decades or more; 1, 2 and 5 times the powers of ten when they span one; else the data's own
    values (plotly's default minor labels read "3 4 … 9 100 2")."""
    axis = {"title": label(field)}
    if not log:
        return axis
    axis.update(type="log", exponentformat="power")
    values = sorted({v for v in values if v and v > 0})
    if not values:
        return axis
    lo, hi = values[0], values[-1]
    if hi / lo >= 100:
        axis["dtick"] = max(1, math.ceil(math.log10(hi / lo) / 8))
    elif hi / lo >= 10:
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
        axis.update(tickvals=ticks, ticktext=[_tick_text(v) for v in ticks])
    elif len(values) <= 8:
        ticks = [values[0]]
        for v in values[1:]:
            if v / ticks[-1] >= 1.08:  # closer labels print over each other
                ticks.append(v)
        axis.update(tickvals=ticks, ticktext=[_tick_text(v) for v in ticks])
    return axis


def _tick_text(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 and float(v).is_integer() else f"{v:.3g}"


def _layout(fig: go.Figure, title: str, x: dict, y: dict) -> go.Figure:
    fig.update_layout(title=title, xaxis=x, yaxis=y, template="plotly_white", showlegend=True,
                      legend=dict(title=None))
    return fig


def variance_vs_p_figure(curve: dict) -> go.Figure:
    """Variance of one KF step against p, with p* marked (from experiments.variance_vs_p)."""
    fig = go.Figure(go.Scatter(x=curve["p"], y=curve["variance"], mode="lines", name="E‖ĝ − g‖² of the step"))
    fig.add_trace(go.Scatter(x=[curve["p_star"]], y=[curve["variance_at_p_star"]], mode="markers",
                             marker=dict(size=11, symbol="x"), name="p* (equal factor norms)"))
    return _layout(fig, "One KF step: variance against the scaling p", _axis("p", curve["p"], log=True),
                   _axis("variance of the step", curve["variance"], log=True))


def variance_figure(rows: list[dict], x: str = "n", title: str | None = None, y: str = "relative_error") -> go.Figure:
    """``y`` (relative error by default) against ``x`` ("n" or "T"), one line per method (and
    per value of the other variable, if it takes several); log–log axes."""
    other = "T" if x == "n" else "n"
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        for value in sorted({r[other] for r in rows if r["method"] == method}):
            pts = sorted((r[x], r[y]) for r in rows if r["method"] == method and r[other] == value)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=f"{method} ({other}={value})",
                                     line=dict(color=method_color(method), dash=method_dash(method))))
    return _layout(fig, title or f"{label(y)} against {x}", _axis(x, [r[x] for r in rows], log=True),
                   _axis(y, [r[y] for r in rows], log=True))


def rank_figure(rows: list[dict], title: str | None = None, y: str = "relative_error") -> go.Figure:
    """``y`` against the rank r, one line per (family, n, T): OK-r against KF-AVG-r (experiments.rank_sweep)."""
    fig = go.Figure()
    keys = dict.fromkeys((r["family"], r["n"], r["T"]) for r in rows)
    for family, n, T in keys:
        pts = sorted((r["r"], r[y], r["method"]) for r in rows if (r["family"], r["n"], r["T"]) == (family, n, T))
        if not pts:
            continue
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=f"{family}-r (n={n}, T={T})",
                                 line=dict(color=method_color(pts[-1][2]), dash=method_dash(pts[-1][2]))))
    return _layout(fig, title or f"{label(y)} against r", _axis("r", [r["r"] for r in rows], log=True),
                   _axis(y, [r[y] for r in rows if r[y] > 0], log=True))


def error_split_figure(rows: list[dict], title: str | None = None) -> go.Figure:
    """Each method's relative error split into bias² and variance (experiments.error_split), bars on a
    log axis, with the mean cosine to the exact gradient in the legend's hover text."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {r["method"]: r for r in rows}
    fig = go.Figure()
    for field, pattern in (("bias2", ""), ("spread", "/")):
        fig.add_trace(go.Bar(x=methods, y=[by[m][field] or None for m in methods], name=label(field),
                             marker=dict(color=[method_color(m) for m in methods], pattern_shape=pattern),
                             customdata=[by[m]["cosine"] for m in methods],
                             hovertemplate="%{x}: %{y:.3g} (mean cosine %{customdata:.3f})<extra></extra>"))
    values = [by[m][f] for m in methods for f in ("bias2", "spread")]
    fig.update_layout(barmode="group")
    return _layout(fig, title or "Relative error: bias² and variance", {"title": "estimator"},
                   _axis("relative error (share of ‖g‖²)", values, log=True))


def training_figure(summaries: list[dict], metric: str, title: str | None = None, log_x: bool = False,
                    references: bool = True) -> go.Figure:
    """``metric`` against steps: one median line and a min–max band per configuration over its seeds
    (a single seed: its line), and (``references``) the reference of every estimator present — a
    marker (with the range of the source's runs) named after its estimator and source, or a dotted
    line for a final value given without a step."""
    fig = go.Figure()
    groups = group_by_configuration(summaries)
    for name, runs in groups.items():
        method = runs[0]["config"]["method"]
        color = method_color(method)
        seeds = f"{len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0]['config']['seed']}"
        if len(runs) == 1:
            pts = [r for r in runs[0]["curve"] if metric in r]
            fig.add_trace(go.Scatter(x=[r["step"] for r in pts], y=[r[metric] for r in pts],
                                     mode="lines+markers" if len(pts) < 30 else "lines", name=f"{name} ({seeds})",
                                     line=dict(color=color, dash=method_dash(method))))
            continue
        band = seed_band(runs, metric)
        xs = [b["step"] for b in band]
        reached = steps_reached(runs)
        if len(reached) > 1:  # past a short seed's end the band covers the seeds that got there
            seeds += ": " + ", ".join(f"{count} to {format_steps(steps)}" for steps, count in reached)
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[b["high"] for b in band] + [b["low"] for b in band][::-1],
                                 fill="toself", line=dict(width=0), fillcolor=color, opacity=0.2,
                                 name=f"{name}: range over {seeds}", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=[b["median"] for b in band], mode="lines", name=f"{name}: median",
                                 line=dict(color=color, dash=method_dash(method))))
    tasks = {s["config"]["task"] for s in summaries} if references else set()
    methods = {s["config"]["method"] for s in summaries}
    all_steps = [r["step"] for s in summaries for r in s["curve"]]
    axis_steps = list(all_steps)  # the axis labels also the reference markers' steps
    for task in tasks:
        for ref in references_for(task, metric, methods):
            if ref.points:
                steps = sorted(ref.points)
                axis_steps += steps
                lo = [v[0] if isinstance(v, tuple) else v for v in (ref.points[s] for s in steps)]
                hi = [v[1] if isinstance(v, tuple) else v for v in (ref.points[s] for s in steps)]
                mid = [(a + b) / 2 for a, b in zip(lo, hi)]
                fig.add_trace(go.Scatter(x=steps, y=mid, mode="markers", name=ref.label,
                                         marker=dict(size=10, color="black", symbol="diamond"),
                                         error_y=dict(type="data", symmetric=False, array=[h - m for h, m in zip(hi, mid)],
                                                      arrayminus=[m - lo_ for m, lo_ in zip(mid, lo)])))
            if ref.final is not None and all_steps:
                fig.add_trace(go.Scatter(x=[min(all_steps), max(all_steps)], y=[ref.final, ref.final], mode="lines",
                                         name=f"{ref.label}: {ref.final:g}",
                                         line=dict(color="black", dash="dot", width=1)))
    return _layout(fig, title or f"{label(metric)} against steps", _axis("step", axis_steps, log=log_x),
                   _axis(metric))


def cost_figure(rows: list[dict], value: str = "ms_per_step", title: str | None = None, x: str = "n") -> go.Figure:
    """``value`` against ``x`` (n, or r), log–log, one line per method, the fitted slope in the legend."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r[x], r[value]) for r in rows if r["method"] == method and r.get(value))
        if not pts:
            continue
        slope = loglog_slope([p[0] for p in pts], [p[1] for p in pts]) if len(pts) > 1 else float("nan")
        name = f"{method} (slope {slope:.2f})" if len(pts) > 1 else method
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                 line=dict(color=method_color(method), dash=method_dash(method))))
    return _layout(fig, title or f"{label(value)} against {x}", _axis(x, [r[x] for r in rows], log=True),
                   _axis(value, [r.get(value) for r in rows], log=True))


# -- notebook 1: RTRL from scratch ------------------------------------------------------------------

#: colours of the two kinds of path in the computation graph of notebook 1
DIRECT_COLOR, STATE_COLOR, OLD_COLOR = "#d62728", "#1f77b4", "#9ecae1"


def computation_graph_figure() -> go.Figure:
    """The unrolled graph h_{t-2} → h_{t-1} → h_t with θ feeding every step and L_t read off h_t,
    drawn with plotly shapes and annotations. The edges are coloured by the term of
    G_t = H_t G_{t-1} + F_t they belong to: the direct path θ → h_t (F_t) and the paths through
    the state, θ → h_{t-1} → h_t and θ → h_{t-2} → h_{t-1} → h_t (both in H_t G_{t-1})."""
    nodes = {  # name: (x, y, label)
        "h3": (0.0, 1.0, "h<sub>t−3</sub>"), "h2": (1.0, 1.0, "h<sub>t−2</sub>"),
        "h1": (2.0, 1.0, "h<sub>t−1</sub>"), "h0": (3.0, 1.0, "h<sub>t</sub>"),
        "theta": (1.9, -0.35, "θ"), "L": (4.0, 1.0, "L<sub>t</sub>"),
        "x2": (1.0, 2.0, "x<sub>t−2</sub>"), "x1": (2.0, 2.0, "x<sub>t−1</sub>"), "x0": (3.0, 2.0, "x<sub>t</sub>"),
    }
    edges = [  # (from, to, colour, dash, label of the edge)
        ("h3", "h2", "#bbbbbb", "dot", "…"), ("h2", "h1", OLD_COLOR, "solid", "H<sub>t−1</sub>"),
        ("h1", "h0", STATE_COLOR, "solid", "H<sub>t</sub>"),
        ("theta", "h2", OLD_COLOR, "solid", "F<sub>t−2</sub>"), ("theta", "h1", STATE_COLOR, "solid", "F<sub>t−1</sub>"),
        ("theta", "h0", DIRECT_COLOR, "solid", "F<sub>t</sub>"),
        ("h0", "L", "#555555", "solid", "∂L<sub>t</sub>/∂h<sub>t</sub>"),
        ("x2", "h2", "#bbbbbb", "solid", ""), ("x1", "h1", "#bbbbbb", "solid", ""), ("x0", "h0", "#bbbbbb", "solid", ""),
    ]
    fig = go.Figure()
    shrink = 0.17  # arrows stop at the node's circle, not its centre
    for a, b, color, dash, text in edges:
        (x0, y0, _), (x1, y1, _) = nodes[a], nodes[b]
        length = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        fig.add_annotation(x=x1 - shrink * ux, y=y1 - shrink * uy, ax=x0 + shrink * ux, ay=y0 + shrink * uy,
                           xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, arrowsize=1.2,
                           arrowwidth=3 if color in (DIRECT_COLOR, STATE_COLOR, OLD_COLOR) else 1.5,
                           arrowcolor=color, text="")
        if dash == "dot":
            fig.add_annotation(x=(x0 + x1) / 2, y=y0 + 0.12, text=text, showarrow=False, font=dict(size=16))
        elif text:
            # the label sits beside the edge's middle, on its left-hand side
            fig.add_annotation(x=(x0 + x1) / 2 - 0.13 * uy, y=(y0 + y1) / 2 + 0.13 * ux, text=text, showarrow=False,
                               font=dict(size=14, color=color if color != "#bbbbbb" else "#555555"))
    fig.add_annotation(x=1.9, y=-0.72, text="θ = vec W: the same weights at every step", showarrow=False,
                       font=dict(size=13, color="#555555"))
    for name, color in (("direct path θ → h<sub>t</sub>: F<sub>t</sub>", DIRECT_COLOR),
                        ("through the state θ → h<sub>t−1</sub> → h<sub>t</sub>: H<sub>t</sub> F<sub>t−1</sub>", STATE_COLOR),
                        ("older paths, summed in G<sub>t−1</sub> already: H<sub>t</sub> H<sub>t−1</sub> F<sub>t−2</sub>, …",
                         OLD_COLOR)):
        # the edges of this colour as a line trace under their arrows: the legend entry is the edges
        xs, ys = [], []
        for a, b, edge_color, _, _ in edges:
            if edge_color == color:
                (x0, y0, _), (x1, y1, _) = nodes[a], nodes[b]
                length = math.hypot(x1 - x0, y1 - y0)
                ux, uy = (x1 - x0) / length, (y1 - y0) / length
                xs += [x0 + shrink * ux, x1 - shrink * ux, None]  # the arrow's own extent, clear of the nodes
                ys += [y0 + shrink * uy, y1 - shrink * uy, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=3), name=name,
                                 hoverinfo="skip"))
    # the nodes last, so they cover the lines' ends
    names = [k for k in nodes]
    fig.add_trace(go.Scatter(
        x=[nodes[k][0] for k in names], y=[nodes[k][1] for k in names], mode="markers+text",
        text=[nodes[k][2] for k in names], textfont=dict(size=16), showlegend=False, hoverinfo="skip",
        marker=dict(size=[46 if k.startswith(("h", "theta")) else 34 for k in names], line=dict(width=2, color="#333333"),
                    color=["#fff7bc" if k == "theta" else "#fde0dd" if k == "L" else "#f0f0f0" if k.startswith("x")
                           else "#ffffff" for k in names])))
    fig.update_layout(title="The unrolled graph: every path from θ to h<sub>t</sub> is one term of "
                            "G<sub>t</sub> = H<sub>t</sub> G<sub>t−1</sub> + F<sub>t</sub>",
                      template="plotly_white", showlegend=True, legend=dict(orientation="h", y=-0.08),
                      xaxis=dict(visible=False, range=[-0.4, 4.4]), yaxis=dict(visible=False, range=[-0.8, 2.35]),
                      height=460)
    return fig


def rtrl_bptt_cost_figure(counted: list[dict], timed: list[dict], T: int) -> go.Figure:
    """RTRL against BPTT, three log–log panels against n: multiply-adds per step and numbers kept
    (both counted on the package by ``experiments.measured_counts``: RTRL n²·P and n·P; BPTT its
    sequence's forward and backward products divided by T, and the tensors autograd keeps over a
    sequence of T steps), and the measured time per step (``measure.step_cost``: ``rtrl`` and
    ``tbptt-<τ>``, BPTT over windows of τ steps). Each line's fitted slope is in its name; a dotted
    n⁴ (resp. n³) reference is drawn through RTRL's largest point."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "counted multiply-adds per step", f"numbers kept (BPTT: a sequence of T = {T})", "measured time per step (ms)"))
    ns = [r["n"] for r in counted]
    panels = [
        (1, [("RTRL: n²·P (H<sub>t</sub> G<sub>t−1</sub>)", [r["rtrl_madds_per_step"] for r in counted], "rtrl"),
             ("BPTT: (forward + backward) / T", [r["bptt_madds_per_sequence"] / r["T"] for r in counted], "bptt")], 4),
        (2, [("RTRL: n·P (G<sub>t</sub>)", [r["rtrl_memory"] for r in counted], "rtrl"),
             ("BPTT: saved for backward", [r["bptt_memory"] for r in counted], "bptt")], 3),
    ]
    for col, lines, power in panels:
        for name, ys, method in lines:
            fig.add_trace(go.Scatter(x=ns, y=ys, mode="lines+markers", line=dict(color=method_color(method)),
                                     name=f"{name} (slope {loglog_slope(ns, ys):.2f})", legendgroup=str(col)),
                          row=1, col=col)
        top = lines[0][1][-1]
        fig.add_trace(go.Scatter(x=ns, y=[top * (n / ns[-1]) ** power for n in ns], mode="lines",
                                 line=dict(color="black", dash="dot", width=1), legendgroup=str(col),
                                 name=f"n^{power} reference (slope {power}) through RTRL's largest n"), row=1, col=col)
    for method in dict.fromkeys(r["method"] for r in timed):
        pts = sorted((r["n"], r["ms_per_step"]) for r in timed if r["method"] == method)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        label_ = "RTRL (rtrl)" if method == "rtrl" else f"BPTT ({method})"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line=dict(color=method_color(method)),
                                 name=f"measured {label_} (slope {loglog_slope(xs, ys):.2f})", legendgroup="3"),
                      row=1, col=3)
    values = {1: [r["rtrl_madds_per_step"] for r in counted] + [r["bptt_madds_per_sequence"] / r["T"] for r in counted],
              2: [r["rtrl_memory"] for r in counted] + [r["bptt_memory"] for r in counted],
              3: [r["ms_per_step"] for r in timed]}
    for col in (1, 2, 3):
        fig.update_xaxes(_axis("n", ns + [r["n"] for r in timed], log=True), row=1, col=col)
        y = _axis("ms_per_step" if col == 3 else "count", values[col], log=True)
        y["title"] = {1: "multiply-adds per step and lane", 2: "numbers per lane", 3: "time per step (ms)"}[col]
        fig.update_yaxes(y, row=1, col=col)
    fig.update_layout(title="RTRL against BPTT: what the equations count, and what the clock measures",
                      template="plotly_white", legend=dict(orientation="h", y=-0.25), height=520)
    return fig


def online_drift_figure(rows: list[dict]) -> go.Figure:
    """RTRL's last gradient, run with an SGD step after every step, against the BPTT gradient at a
    single parameter setting (``experiments.online_rtrl_drift``), against the learning rate η."""
    pts = sorted((r for r in rows if r["lr"] > 0), key=lambda r: r["lr"])
    lrs = [r["lr"] for r in pts]
    fig = go.Figure()
    for field, name, color in (("vs_current", "vs BPTT at θ^(T−1), the parameters of step T", STATE_COLOR),
                               ("vs_initial", "vs BPTT at θ^(0), the parameters of step 1", DIRECT_COLOR)):
        fig.add_trace(go.Scatter(x=lrs, y=[r[field] for r in pts], mode="lines+markers", name=name,
                                 line=dict(color=color)))
    fig.add_trace(go.Scatter(x=lrs, y=[r["parameter_change"] for r in pts], mode="lines+markers",
                             name="how far θ moved: ‖θ^(T−1) − θ^(0)‖ / ‖θ^(0)‖", line=dict(color="#7f7f7f", dash="dash")))
    values = [r[f] for r in pts for f in ("vs_current", "vs_initial", "parameter_change")]
    T = pts[0]["T"] if pts else "?"
    return _layout(fig, f"RTRL with an update every step: dL_T/dθ (T = {T}) is no single setting's BPTT gradient",
                   _axis("learning rate η", lrs, log=True), _axis("relative difference ‖ĝ − g‖ / ‖g‖", values, log=True))
