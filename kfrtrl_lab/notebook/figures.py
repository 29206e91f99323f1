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
    "total": "multiply-adds per lane (matrix products)", "bmm": "multiply-adds per lane (batched products)",
    "flops": "counted flops per step", "GFLOP_per_s": "GFLOP/s (counted flops / time)",
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


def bias_variance_figure(rows: list[dict], title: str | None = None) -> go.Figure:
    """Each method's bias² (sampling noise taken out) and variance with their confidence intervals
    (rows of experiments.error_split_ci), on a log axis. A bias² whose interval reaches 0 cannot be
    drawn on a log axis as a bar: it is drawn as a hollow marker at its upper bound ("bias² below
    this"); a deterministic method's bias² is exact (no interval)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {r["method"]: r for r in rows}
    fig = go.Figure()
    resolved = [m for m in methods if by[m]["bias2_lo"] > 0]
    fig.add_trace(go.Bar(x=resolved, y=[by[m]["bias2"] for m in resolved], name="bias² (resolved from zero)",
                         marker=dict(color=[method_color(m) for m in resolved]), offsetgroup="bias",
                         error_y=dict(type="data", symmetric=False,
                                      array=[by[m]["bias2_hi"] - by[m]["bias2"] for m in resolved],
                                      arrayminus=[by[m]["bias2"] - by[m]["bias2_lo"] for m in resolved]),
                         hovertemplate="%{x}: bias² %{y:.3g}<extra></extra>"))
    bounded = [m for m in methods if by[m]["bias2_lo"] <= 0]
    fig.add_trace(go.Scatter(x=bounded, y=[by[m]["bias2_hi"] for m in bounded], mode="markers",
                             name="bias² consistent with 0: below its 95% upper bound (marker)",
                             marker=dict(symbol="triangle-down-open", size=13, color=[method_color(m) for m in bounded],
                                         line=dict(width=2)),
                             hovertemplate="%{x}: bias² < %{y:.3g}<extra></extra>"))
    noisy = [m for m in methods if by[m]["spread"] > 0]
    fig.add_trace(go.Bar(x=noisy, y=[by[m]["spread"] for m in noisy], name=label("spread"), offsetgroup="spread",
                         marker=dict(color=[method_color(m) for m in noisy], pattern_shape="/"),
                         error_y=dict(type="data", symmetric=False,
                                      array=[by[m]["spread_hi"] - by[m]["spread"] for m in noisy],
                                      arrayminus=[by[m]["spread"] - max(by[m]["spread_lo"], by[m]["spread"] * 1e-3)
                                                  for m in noisy]),
                         hovertemplate="%{x}: variance %{y:.3g}<extra></extra>"))
    values = [by[m]["bias2"] for m in resolved] + [by[m]["bias2_hi"] for m in bounded] + \
             [by[m]["spread_hi"] for m in noisy]
    fig.update_layout(barmode="group", xaxis=dict(categoryorder="array", categoryarray=methods))
    samples = sorted({r["samples"] for r in rows})
    return _layout(fig, title or f"Bias² and variance with 95% intervals ({', '.join(map(str, samples))} samples)",
                   {"title": "estimator", "categoryorder": "array", "categoryarray": methods},
                   _axis("relative error (share of ‖g‖²)", values, log=True))


def ok_split_figure(sigma, r: int, title: str | None = None) -> go.Figure:
    """The singular values σ_1 ≥ … ≥ σ_(r+1) of one OK target Γ_t as bars: the q kept exactly and the
    mixed set 𝓜, with the level Σ_𝓜/k every one of the k mixed output pairs carries (no mixed σ may
    exceed it: that is the split rule)."""
    s = [float(v) for v in sigma][: r + 1]  # Γ_t has rank ≤ r + 1: further singular values are zero
    q = next(q for q in range(r) if (r - q) * s[q] <= sum(s[q:]) * (1 + 1e-12))
    k, total = r - q, sum(s[q:])
    idx = list(range(1, len(s) + 1))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=idx[:q], y=s[:q], name=f"kept exactly (q = {q})", marker_color="#5e2f8a"))
    fig.add_trace(go.Bar(x=idx[q:], y=s[q:], name=f"mixed set 𝓜 ({len(s) - q} directions into k = {k} pair{'s' if k > 1 else ''})",
                         marker_color="#c5b0d5"))
    fig.add_trace(go.Scatter(x=[q + 0.5, len(s) + 0.5], y=[total / k] * 2, mode="lines",
                             line=dict(color="black", dash="dash"), name=f"Σ_𝓜 / k = {total / k:.3g} (each mixed pair)"))
    return _layout(fig, title or f"One OK-{r} step: the singular values of Γ_t and the split",
                   {"title": "direction i", "tickvals": idx}, {"title": "singular value σ_i"})


def time_vs_flops_figure(rows: list[dict], title: str | None = None) -> go.Figure:
    """Measured time per step against the counted flops (experiments.throughput_rows), log–log, one
    line per method over n; the dotted line is the bare product H·A's best rate in the same rows
    (time = flops / that rate): points far above it spend their time elsewhere than in counted flops
    (fixed per-step costs at small n, memory traffic for the O(P) methods at large n)."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["flops"], r["ms_per_step"], r["n"]) for r in rows if r["method"] == method)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=method,
                                 text=[f"n={p[2]}" for p in pts],
                                 hovertemplate="%{text}: %{x:.3g} flops, %{y:.3g} ms<extra>" + method + "</extra>",
                                 line=dict(color=method_color(method), dash=method_dash(method))))
    bare = [r for r in rows if r["method"] == "bare H·A"]
    if bare:
        rate = max(r["GFLOP_per_s"] for r in bare)
        lo, hi = min(r["flops"] for r in rows), max(r["flops"] for r in rows)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo / rate / 1e6, hi / rate / 1e6], mode="lines",
                                 line=dict(color="black", dash="dot"),
                                 name=f"counted flops at the bare H·A's best rate ({rate:.0f} GFLOP/s)"))
    return _layout(fig, title or "Time per step against counted flops", _axis("flops", [r["flops"] for r in rows], log=True),
                   _axis("ms_per_step", [r["ms_per_step"] for r in rows], log=True))


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
