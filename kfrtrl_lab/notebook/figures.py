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


#: the x-axes :func:`progress_figure` can draw a training curve against
PROGRESS_AXES = {"step": "time steps", "updates": "parameter updates (Adam steps)",
                 "wall_s": "wall-clock time (s) on the machine that ran it"}


def progress_figure(summaries: list[dict], metric: str, x: str = "step", title: str | None = None,
                    log_x: bool = False, references: bool = True) -> go.Figure:
    """``metric`` against ``x``: "step" (time steps, as :func:`training_figure`), "updates" (Adam steps
    made by then, :func:`experiments.updates_made`: TBPTT-τ makes one per window of τ steps) or
    "wall_s" (the run's own recorded wall-clock time). Median and seed range per configuration as in
    :func:`training_figure`. The references are published against steps of methods that update every
    step, so they are drawn on the "step" and "updates" axes only (their wall-clock is another machine's)."""
    from .experiments import updates_made

    if x not in PROGRESS_AXES:
        raise ValueError(f"x must be one of {sorted(PROGRESS_AXES)}, got {x!r}")
    if x == "step":
        return training_figure(summaries, metric, title=title, log_x=log_x, references=references)
    moved = []
    for s in summaries:
        c = s["config"]
        rows = []
        for r in s["curve"]:
            if metric not in r or (x == "wall_s" and "wall_s" not in r):
                continue
            at = updates_made(c["method"], r["step"], c.get("update_every", 1)) if x == "updates" else r["wall_s"]
            rows.append(dict(r, step=at))
        if rows:
            moved.append(dict(s, curve=rows, steps_done=rows[-1]["step"]))
    fig = training_figure(moved, metric, title=title, log_x=log_x, references=references and x == "updates")
    fig.update_xaxes(title_text=PROGRESS_AXES[x])
    return fig


#: the copy task's symbols and the colours the timeline draws them in
_COPY_TOKENS = {0: ("0", "#ffffff"), 1: ("1", "#4c78a8"), 2: ("marker", "#f58518"), 3: ("blank", "#e6e6e6")}


def copy_timeline_figure(timeline: dict, t_max: int | None = None, threshold: float = 0.15,
                         window: int = 5) -> go.Figure:
    """One copy sequence (``experiments.copy_timeline``) over its time steps t = 0 … 2T+1: the row the
    network reads (x_t), the row it must output (y_t), an arrow from each bit read to the step where
    it is recalled, T+1 steps later, and a row saying where the loss is counted (every step; only
    the T recall steps carry information), with the curriculum rule that chose T beneath."""
    T, L = timeline["T"], timeline["length"]
    rows = {0.0: ("input x_t", timeline["inputs"]), 2.0: ("target y_t", timeline["targets"])}
    fig = go.Figure()
    for y, (name, tokens) in rows.items():
        for t, tok in enumerate(tokens):
            text, color = _COPY_TOKENS[tok]
            fig.add_shape(type="rect", x0=t - 0.45, x1=t + 0.45, y0=y - 0.4, y1=y + 0.4,
                          fillcolor=color, line=dict(color="#444", width=1))
            fig.add_annotation(x=t, y=y, text="2" if tok == 2 else ("·" if tok == 3 else text), showarrow=False,
                               font=dict(size=13, color="#fff" if tok == 1 else "#000"))
    for i in range(T):  # bit i+1 is read at t = i+1 and recalled at t = i+T+2: a lag of T+1 steps
        fig.add_annotation(x=i + T + 2, y=1.58, ax=i + 1, ay=0.42, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowwidth=1.2, arrowcolor="#d62728", text="")
    # where the loss is counted: every step; informative only in the recall phase
    for t, informative in enumerate(timeline["informative"]):
        fig.add_shape(type="rect", x0=t - 0.45, x1=t + 0.45, y0=3.0 - 0.25, y1=3.0 + 0.25, line=dict(width=0),
                      fillcolor="#d62728" if informative else "#bdbdbd")
    fig.add_shape(type="rect", x0=T + 1.5, x1=L - 0.5, y0=-0.55, y1=3.4, line=dict(color="#d62728", dash="dot"),
                  fillcolor="rgba(214,39,40,0.06)", layer="below")
    fig.add_annotation(x=(T + 2 + L - 1) / 2, y=3.62, showarrow=False, text=f"recall phase: {T} informative targets")
    fig.add_annotation(x=(1 + T) / 2, y=-0.75, showarrow=False, text=f"read phase: the bits b_1…b_{T}")
    fig.add_annotation(x=T + 1, y=2.62, showarrow=False, text="marker: recall starts")
    # legend entries (the cells are shapes): each trace is one of the cells it names, drawn on it
    for tok, (text, color) in _COPY_TOKENS.items():
        where = [(t, y) for y, (_, tokens) in rows.items() for t, v in enumerate(tokens) if v == tok][:1]
        if where:
            fig.add_trace(go.Scatter(x=[where[0][0]], y=[where[0][1]], mode="markers", name=f"{tok}: {text}",
                                     hoverinfo="skip", marker=dict(symbol="square", size=14, color=color,
                                                                   line=dict(color="#444", width=1))))
    fig.add_trace(go.Scatter(x=[1, T + 2], y=[0.42, 1.58], mode="lines", name=f"bit recalled T+1 = {T + 1} steps later",
                             hoverinfo="skip", line=dict(color="#d62728", width=1.2)))
    for name, t, color in (("loss counted, target predictable", 0, "#bdbdbd"),
                           ("loss counted, 1 bit of information", L - 1, "#d62728")):
        fig.add_trace(go.Scatter(x=[t], y=[3.0], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol="square", size=14, color=color)))
    now = f"T_max = {t_max}, so " if t_max is not None else ""
    rule = (f"Curriculum: {now}T is drawn uniformly from {{max(1, T_max − {window - 1}), …, T_max}} for each new "
            f"sequence;<br>T_max grows by 1 at a sequence start once the average loss falls under "
            f"{threshold:g} bits (then the average restarts at 0.3).")
    fig.add_annotation(x=0, y=-0.3, xref="paper", yref="paper", xanchor="left", yanchor="top", showarrow=False,
                       align="left", text=rule)
    fig.update_layout(title=f"One copy sequence, T = {T}: 2T+2 = {L} time steps", template="plotly_white",
                      showlegend=True, height=480, margin=dict(b=120),
                      xaxis=dict(title="time step t within the sequence", range=[-0.7, L - 0.3],
                                 tickvals=list(range(L)), zeroline=False, showgrid=False),
                      yaxis=dict(tickvals=[0, 2, 3], ticktext=["input x_t", "target y_t", "loss ℓ_t"],
                                 range=[-1.0, 3.85], zeroline=False, showgrid=False))
    return fig

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
