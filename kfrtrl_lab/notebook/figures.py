"""Plotly figures for the notebooks and reports: each takes rows or summaries, returns a Figure."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

from ..measure import loglog_slope
from ..results import REFERENCE

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


COLORS = {"kf-rtrl": "#1f77b4", "uoro": "#d62728", "rtrl": "#2ca02c", "bptt": "#7f7f7f"}


def method_color(method: str) -> str:
    return COLORS.get(method, "#ff7f0e" if method.startswith("tbptt") else "#9467bd")


def variance_vs_p_figure(curve: dict) -> go.Figure:
    """Variance of one KF step against p, with p* marked (from experiments.variance_vs_p)."""
    fig = go.Figure(go.Scatter(x=curve["p"], y=curve["variance"], mode="lines", name="E‖ĝ − g‖²"))
    fig.add_trace(go.Scatter(x=[curve["p_star"]], y=[curve["variance_at_p_star"]], mode="markers",
                             marker=dict(size=11, symbol="x"), name="p* (equal factor norms)"))
    fig.update_layout(xaxis=dict(type="log", title="p"), yaxis=dict(type="log", title="variance of the step"),
                      title="One KF step: variance against the scaling p", template="plotly_white")
    return fig


def variance_figure(rows: list[dict], x: str = "n", title: str | None = None) -> go.Figure:
    """Relative variance against ``x`` ("n" or "T"), one line per method (and per the other
    variable, if it takes several values); log–log axes."""
    other = "T" if x == "n" else "n"
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        for value in sorted({r[other] for r in rows if r["method"] == method}):
            pts = sorted((r[x], r["relative_variance"]) for r in rows if r["method"] == method and r[other] == value)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=f"{method} ({other}={value})", line=dict(color=method_color(method))))
    fig.update_layout(xaxis=dict(type="log", title=x), yaxis=dict(type="log", title="E‖ĝ − g‖² / ‖g‖²"),
                      title=title or f"Relative variance against {x}", template="plotly_white")
    return fig


def training_figure(summaries: list[dict], metric: str, fresh: list[dict] | None = None,
                    title: str | None = None) -> go.Figure:
    """``metric`` (t_max, valid_bpc, loss_bits) against steps for committed run summaries
    (solid) and fresh runs (dotted), with the OK reference points of section 8."""
    fig = go.Figure()
    for style, group in (("solid", summaries), ("dot", fresh or [])):
        for s in group:
            rows = [r for r in s["curve"] if metric in r]
            c = s["config"]
            label = f"{c['method']} n={c['hidden']}" + (" (fresh)" if style == "dot" else "")
            fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[r[metric] for r in rows], mode="lines",
                                     name=label, line=dict(color=method_color(c["method"]), dash=style)))
    tasks = {s["config"]["task"] for s in summaries + (fresh or [])}
    for task in tasks:
        ref_metric, ref = REFERENCE[task]
        if ref_metric == metric:
            xs = sorted(ref)
            mid = [sum(v) / 2 if isinstance(v, tuple) else v for v in (ref[s] for s in xs)]
            fig.add_trace(go.Scatter(x=xs, y=mid, mode="markers", marker=dict(size=10, color="black", symbol="diamond"),
                                     name="OK reference (official logs)"))
    fig.update_layout(xaxis=dict(title="time steps"), yaxis=dict(title=metric), template="plotly_white",
                      title=title or f"{metric} against steps")
    return fig


def cost_figure(rows: list[dict], value: str = "ms_per_step", title: str | None = None) -> go.Figure:
    """``value`` against n, log–log, one line per method, with the fitted slope in the legend."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["n"], r[value]) for r in rows if r["method"] == method and r.get(value))
        if not pts:
            continue
        slope = loglog_slope([p[0] for p in pts], [p[1] for p in pts]) if len(pts) > 1 else float("nan")
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=f"{method} (slope {slope:.2f})", line=dict(color=method_color(method))))
    fig.update_layout(xaxis=dict(type="log", title="hidden size n"), yaxis=dict(type="log", title=value),
                      title=title or f"{value} against n", template="plotly_white")
    return fig
