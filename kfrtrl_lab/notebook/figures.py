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
    """Variance of one KF step against p, with p* marked (from experiments.variance_vs_p). With the
    keys of experiments.variance_bowl the line is the closed form and the variance measured from
    sign draws is drawn over it (markers)."""
    if "closed_form" in curve:
        line = go.Scatter(x=curve["p"], y=curve["closed_form"], mode="lines",
                          name="closed form p²‖u‖²‖D‖² + ‖x̂‖²‖M‖²/p² + 2⟨u,x̂⟩⟨M,D⟩")
    else:
        line = go.Scatter(x=curve["p"], y=curve["variance"], mode="lines", name="E‖ĝ − g‖² of the step")
    fig = go.Figure(line)
    fig.add_trace(go.Scatter(x=[curve["p_star"]], y=[curve["variance_at_p_star"]], mode="markers",
                             marker=dict(size=11, symbol="x"), name="p* (equal factor norms)"))
    values = list(curve["variance"])
    if curve.get("measured"):
        pts = curve["measured"]
        fig.add_trace(go.Scatter(x=[m["p"] for m in pts], y=[m["variance"] for m in pts], mode="markers",
                                 marker=dict(size=9, color="#d62728", symbol="circle-open", line=dict(width=2)),
                                 name=f"measured: sample variance of {pts[0]['draws']} sign draws"))
        values += [m["variance"] for m in pts]
    return _layout(fig, "One KF step: variance against the scaling p", _axis("p", curve["p"], log=True),
                   _axis("variance of the step", values, log=True))


def jacobian_blocks_figure(D, H, title: str | None = None, block_names=None) -> go.Figure:
    """Heatmaps of one step's D_t (n_s × r_g n: r_g diagonal blocks, zeros left blank) and H_t
    (n_s × n_s, dense), each on its own colour scale centred at 0 (experiments.kron_convention_check);
    ``block_names`` label D_t's gate blocks."""
    from plotly.subplots import make_subplots

    D, H = D.detach().double(), H.detach().double()
    ns, cols = D.shape
    r = cols // ns if cols % ns == 0 else 1
    fig = make_subplots(rows=1, cols=2, column_widths=[cols / (cols + ns), ns / (cols + ns)],
                        subplot_titles=(f"D_t: {ns} × {cols}, {r} diagonal blocks", f"H_t: {ns} × {ns}, dense"),
                        horizontal_spacing=0.08)
    # structural zeros stay blank: None (JSON null) is a gap in a heatmap; NaN would not be valid JSON
    shown = [[v if v != 0 else None for v in row] for row in D.tolist()]
    for col, M, name in ((1, shown, "D_t"), (2, H.tolist(), "H_t")):
        scale = max((D if col == 1 else H).abs().max().item(), 1e-300)
        bar = dict(x=0.56, len=0.8, thickness=12) if col == 1 else dict(len=0.8, thickness=12)
        fig.add_trace(go.Heatmap(z=M, zmid=0, zmin=-scale, zmax=scale, colorscale="RdBu_r",
                                 colorbar=bar, name=name, hoverongaps=False,
                                 hovertemplate=name + "[%{y}, %{x}] = %{z:.3g}<extra></extra>"), 1, col)
        fig.update_yaxes(autorange="reversed", title_text="row (state unit i)", row=1, col=col,
                         scaleanchor=f"x{'' if col == 1 else col}", constrain="domain")
        fig.update_xaxes(constrain="domain", row=1, col=col)
    fig.update_xaxes(title_text="column c (gate block, unit)", row=1, col=1)
    fig.update_xaxes(title_text="column (unit of h_{t-1})", row=1, col=2)
    for g in range(1, r):
        fig.add_vline(x=g * ns - 0.5, line=dict(color="black", width=1, dash="dot"), row=1, col=1)
    for g, block in enumerate(block_names or []):
        fig.add_annotation(x=g * ns + (ns - 1) / 2, y=-0.5, yshift=12, text=block, showarrow=False, row=1, col=1)
    fig.update_layout(title=title or "One RHN step: the structure of D_t and H_t", template="plotly_white",
                      showlegend=False)
    return fig


def kron_shapes_figure(u, A, title: str | None = None) -> go.Figure:
    """One Kronecker pair drawn to scale: the n × P influence u ⊗ A (P = a·r_g n; the column block
    of x̂-entry a' is u_{a'} A) above its two factors, u (a numbers) and A (n × r_g n), with the
    count of stored numbers in each title."""
    from plotly.subplots import make_subplots

    u, A = u.detach().double(), A.detach().double()
    a, (n, cols) = u.numel(), A.shape
    G = torch_kron_row(u, A)
    P = G.shape[1]
    fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], row_heights=[0.45, 0.55],
                        column_widths=[0.5, 0.5], vertical_spacing=0.2,
                        subplot_titles=(f"G = u ⊗ A: n × P = {n} × {P} = {n * P} numbers",
                                        f"u: a = {a} numbers", f"A: n × r_g n = {n} × {cols} = {n * cols} numbers"))
    scale = max(G.abs().max().item(), u.abs().max().item(), A.abs().max().item())
    for M, row, col, name in ((G, 1, 1, "u ⊗ A"), (u[None], 2, 1, "u"), (A, 2, 2, "A")):
        fig.add_trace(go.Heatmap(z=M.tolist(), zmid=0, zmin=-scale, zmax=scale, colorscale="RdBu_r",
                                 showscale=row == 1, name=name,
                                 hovertemplate=name + "[%{y}, %{x}] = %{z:.3g}<extra></extra>"), row, col)
        anchor = {(1, 1): "x", (2, 1): "x2", (2, 2): "x3"}[(row, col)]
        fig.update_yaxes(autorange="reversed", row=row, col=col, showticklabels=row == 1 or col == 2,
                         scaleanchor=anchor, constrain="domain")  # square cells: drawn to scale
        fig.update_xaxes(constrain="domain", row=row, col=col)
    for k in range(1, a):
        fig.add_vline(x=k * cols - 0.5, line=dict(color="black", width=0.5), row=1, col=1)
    fig.update_xaxes(title_text=f"P = a · r_g n columns: {a} blocks, block a' = u_a' · A", row=1, col=1)
    fig.update_layout(title=title or f"Memory of one lane: {n * P} numbers for G, {a + n * cols} for (u, A)",
                      template="plotly_white", showlegend=False, height=560)
    return fig


def torch_kron_row(u, A):
    """u ⊗ A for a vector u (a,) and a matrix A (n, c): the n × (a·c) matrix torch.kron(u[None], A),
    entry [i, a'·c + j] = u_{a'} A[i, j] (docs/notation.md's convention)."""
    import torch

    return torch.kron(u[None], A)


def kron_memory_figure(rows: list[dict], title: str | None = None) -> go.Figure:
    """Numbers stored per lane against n (experiments.kron_memory_rows): the exact influence G_t
    (n·P ~ r_g n³) against one Kronecker pair u ⊗ A (a + r_g n² ~ r_g n²), log–log."""
    fig = go.Figure()
    ns = [r["n"] for r in rows]
    for key, name, color in (("G", "exact influence G_t: n·P = n·a·r_g n", method_color("rtrl")),
                             ("kron", "one pair (u, A): a + n·r_g n", method_color("kf-rtrl"))):
        fig.add_trace(go.Scatter(x=ns, y=[r[key] for r in rows], mode="lines+markers", name=name,
                                 line=dict(color=color)))
    return _layout(fig, title or "Numbers stored per lane (RHN, m = 4)", _axis("n", ns, log=True),
                   _axis("numbers stored per lane", [r[k] for r in rows for k in ("G", "kron")], log=True))


def zscore_figure(result: dict, title: str | None = None) -> go.Figure:
    """Histogram of the per-coordinate z-scores (mean of S estimates − g) / SE of
    experiments.sequence_unbiasedness, against the standard normal density (what an unbiased
    estimator gives for large S) and the test's critical ±z (Bonferroni over the P coordinates)."""
    import math

    z = [v for v in result["z"].tolist() if math.isfinite(v)]
    crit = result["test"]["z_critical"]
    width = 0.5
    top = max(crit + 1, max(abs(v) for v in z) + width)
    fig = go.Figure(go.Histogram(x=z, xbins=dict(start=-math.ceil(top), end=math.ceil(top), size=width),
                                 histnorm="probability density", name=f"z of the {len(z)} coordinates of W",
                                 marker=dict(color=method_color(result["method"]), opacity=0.7)))
    xs = [-top + 2 * top * k / 200 for k in range(201)]
    fig.add_trace(go.Scatter(x=xs, y=[math.exp(-x * x / 2) / math.sqrt(2 * math.pi) for x in xs], mode="lines",
                             name="standard normal density (unbiased, large S)", line=dict(color="black")))
    for sign in (-1, 1):
        fig.add_trace(go.Scatter(x=[sign * crit] * 2, y=[0, 0.45], mode="lines", showlegend=sign > 0,
                                 name=f"critical ±{crit:.2f} (α = {result['test']['alpha']:g}, Bonferroni over P)",
                                 line=dict(color="#d62728", dash="dash")))
    return _layout(fig, title or (f"{result['method']} over T = {result['T']} steps (n = {result['n']}, "
                                  f"S = {result['samples']}): z-scores of the mean"),
                   {"title": "z = (mean of S estimates − g) / standard error"}, {"title": "density"})


def mean_convergence_figure(results, title: str | None = None) -> go.Figure:
    """‖mean of the first S' estimates − g‖²/‖g‖² against S' for one result of
    experiments.sequence_unbiasedness (or a list of them), each with 𝓔/S', what it is in expectation
    for an unbiased estimator (𝓔 = relative error of one estimate, measured from the same samples);
    a bias makes the measured line level off at bias² instead."""
    results = [results] if isinstance(results, dict) else list(results)
    fig = go.Figure()
    values, S = [], []
    for result in results:
        rows = result["convergence"]
        xs = [r["S"] for r in rows]
        color = method_color(result["method"])
        fig.add_trace(go.Scatter(x=xs, y=[r["mean_error"] for r in rows], mode="lines+markers",
                                 name=f"measured: {result['method']}", line=dict(color=color)))
        fig.add_trace(go.Scatter(x=xs, y=[r["unbiased_expectation"] for r in rows], mode="lines",
                                 name=f"relative error/S, if {result['method']} were unbiased (relative error {result['relative_error']:.3g})",
                                 line=dict(color=color, dash="dot")))
        values += [r[k] for r in rows for k in ("mean_error", "unbiased_expectation")]
        S += xs
    return _layout(fig, title or "The mean of S estimates closes in on g", _axis("samples S", S, log=True),
                   _axis("‖mean − g‖² / ‖g‖²", values, log=True))


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


# -- notebook 3 -----------------------------------------------------------------------------------

LABELS.update({
    "relative_influence_error": "relative influence error E‖Ĝ_t − G_t‖² / ‖G_t‖²", "t": "time step t",
    "ratio": "ratio of relative errors UORO / KF-RTRL", "H_norm": "‖H_t‖₂ (largest singular value)",
    "one_step": "variance added by one step E‖Ĝ_t − Γ_t‖²",
})


def _error_bars(pts_low, pts_mid, pts_high) -> dict:
    return dict(type="data", symmetric=False, array=[h - m for h, m in zip(pts_high, pts_mid)],
                arrayminus=[m - lo for m, lo in zip(pts_mid, pts_low)])


def variance_ci_figure(rows: list[dict], x: str = "n", title: str | None = None, y: str = "relative_error") -> go.Figure:
    """:func:`variance_figure` with each point's bootstrap interval (``ci_low``, ``ci_high``, from
    experiments.variance_sweep_bootstrap) as an error bar; the level is named in the legend."""
    other = "T" if x == "n" else "n"
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        for value in sorted({r[other] for r in rows if r["method"] == method}):
            pts = sorted((r[x], r[y], r["ci_low"], r["ci_high"], r.get("level", 0.95))
                         for r in rows if r["method"] == method and r[other] == value)
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                name=f"{method} ({other}={value}), {pts[0][4]:.0%} bootstrap interval",
                error_y=_error_bars([p[2] for p in pts], [p[1] for p in pts], [p[3] for p in pts]),
                line=dict(color=method_color(method), dash=method_dash(method))))
    values = [r[k] for r in rows for k in (y, "ci_low", "ci_high")]
    return _layout(fig, title or f"{label(y)} against {x}", _axis(x, [r[x] for r in rows], log=True),
                   _axis(y, values, log=True))


def ratio_figure(rows: list[dict], x: str = "n", guide_slope: float = 1.0, title: str | None = None) -> go.Figure:
    """The ratio UORO / KF-RTRL of relative errors against ``x`` (experiments.ratio_rows) with its
    bootstrap interval, the fitted log–log slope in the legend, and a guide line of slope
    ``guide_slope`` through the first point (a reference for the eye, not a fit)."""
    pts = sorted((r[x], r["ratio"], r["ci_low"], r["ci_high"]) for r in rows)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    slope = loglog_slope(xs, ys) if len(pts) > 1 else float("nan")
    level = rows[0].get("level", 0.95) if rows else 0.95
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers",
                               name=f"{rows[0]['numerator']} / {rows[0]['denominator']} measured "
                                    f"(fitted slope {slope:.2f}), {level:.0%} bootstrap interval" if rows else "ratio",
                               error_y=_error_bars([p[2] for p in pts], ys, [p[3] for p in pts]),
                               line=dict(color="#000000")))
    guide = [ys[0] * (v / xs[0]) ** guide_slope for v in xs] if pts else []
    fig.add_trace(go.Scatter(x=xs, y=guide, mode="lines", line=dict(color="#7f7f7f", dash="dot"),
                             name=f"guide: ∝ {x}^{guide_slope:g} (slope {guide_slope:g}) through the first point, not a fit"))
    return _layout(fig, title or f"UORO / KF-RTRL against {x}", _axis(x, xs, log=True),
                   _axis("ratio", ys + guide + [p[2] for p in pts] + [p[3] for p in pts], log=True))


def one_step_figure(rows: list[dict], title: str | None = None) -> go.Figure:
    """The variance added by ONE step from the same G_{t-1} (experiments.one_step_sweep) against n:
    measured (markers; exact over all sign patterns, or a mean over random patterns with ±2 standard
    errors) and the closed form (lines), one colour per method."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["n"], r["measured"], r["standard_error"], r["closed_form"]) for r in rows if r["method"] == method)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[3] for p in pts], mode="lines",
                                 name=f"{method}: closed form", line=dict(color=method_color(method))))
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                                 name=f"{method}: measured (package's step, ±2 SE)",
                                 marker=dict(color=method_color(method), size=10, symbol="circle-open"),
                                 error_y=dict(type="data", array=[2 * p[2] for p in pts])))
    values = [r[k] for r in rows for k in ("measured", "closed_form")]
    return _layout(fig, title or "Variance added by one step from the same G_{t-1}", _axis("n", [r["n"] for r in rows], log=True),
                   _axis("one_step", values, log=True))


def influence_error_figure(curves: dict, title: str | None = None) -> go.Figure:
    """E‖Ĝ_t − G_t‖²/‖G_t‖² against t (experiments.influence_error_over_time) for several networks:
    ``curves`` maps a network's name to its rows; a line per (network, method), its bootstrap
    interval as a band; solid for the first network, dashed for the others."""
    fig = go.Figure()
    values = []
    for k, (name, rows) in enumerate(curves.items()):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["t"], r["relative_influence_error"], r["ci_low"], r["ci_high"])
                         for r in rows if r["method"] == method and r["t"] > 1)
            ts = [p[0] for p in pts]
            color = method_color(method)
            fig.add_trace(go.Scatter(x=ts + ts[::-1], y=[p[3] for p in pts] + [p[2] for p in pts][::-1], fill="toself",
                                     line=dict(width=0), fillcolor=color, opacity=0.2, hoverinfo="skip",
                                     name=f"{method}, {name}: {rows[0].get('level', 0.95):.0%} bootstrap band"))
            fig.add_trace(go.Scatter(x=ts, y=[p[1] for p in pts], mode="lines+markers", name=f"{method}, {name}",
                                     line=dict(color=color, dash="solid" if k == 0 else "dash")))
            values += [p[i] for p in pts for i in (1, 2, 3)]
    return _layout(fig, title or "Relative influence error along one sequence", _axis("t"),
                   _axis("relative_influence_error", values, log=True))


def jacobian_norm_figure(curves: dict, title: str | None = None) -> go.Figure:
    """‖H_t‖₂ against t (experiments.state_jacobian_norms) for several networks (``curves``: name →
    list of norms), with the line ‖H_t‖₂ = 1 above which the KF-RTRL paper's contraction assumption
    (‖H_t‖₂ ≤ 1 − ε) fails."""
    fig = go.Figure()
    values = [1.0]
    for name, norms in curves.items():
        ts = list(range(1, len(norms) + 1))
        fig.add_trace(go.Scatter(x=ts, y=norms, mode="lines+markers", name=name))
        values += norms
    longest = max((len(v) for v in curves.values()), default=1)
    fig.add_trace(go.Scatter(x=[1, longest], y=[1.0, 1.0], mode="lines", line=dict(color="black", dash="dot", width=1),
                             name="‖H_t‖₂ = 1 (the contraction assumption needs every step below it)"))
    return _layout(fig, title or "Does the state contract? ‖H_t‖₂ along one sequence", _axis("t"),
                   _axis("H_norm", values, log=True))


def factor_shapes_figure(n: int = 8, m: int = 4, gate_blocks: int = 2) -> go.Figure:
    """What each method keeps per lane, drawn to scale as rectangles of numbers: UORO's s̃ (n) and
    θ̃ (a × r_g n, shaped like W) against KF-RTRL's u (a) and A (n × r_g n), a = m + n + 1. Both
    totals are O(n²); the legend gives the counts."""
    a, c = m + n + 1, gate_blocks * n
    blocks = {  # name: (x0, y0, width, height, colour, method)
        "UORO s̃ (n)": (0, 0, 1, n, "#d62728", "uoro"),
        f"UORO θ̃ (a × r_g n = {a} × {c})": (2, 0, c, a, "#d62728", "uoro"),
        "KF-RTRL u (a)": (c + 5, 0, 1, a, "#1f77b4", "kf-rtrl"),
        f"KF-RTRL A (n × r_g n = {n} × {c})": (c + 7, 0, c, n, "#1f77b4", "kf-rtrl"),
    }
    fig = go.Figure()
    for name, (x0, y0, w, h, color, method) in blocks.items():
        fig.add_trace(go.Scatter(x=[x0, x0 + w, x0 + w, x0, x0], y=[y0, y0, y0 + h, y0 + h, y0], fill="toself",
                                 mode="lines", line=dict(color=color), fillcolor=color, opacity=0.35,
                                 name=f"{name}: {w * h} numbers"))
    uoro, kf = n + a * c, a + n * c
    fig.update_layout(title=f"Per lane: UORO keeps n + a·r_g n = {uoro} numbers, KF-RTRL a + n·r_g n = {kf} "
                            f"(n = {n}, m = {m}, r_g = {gate_blocks}): both O(n²)",
                      template="plotly_white", showlegend=True,
                      xaxis=dict(visible=False, scaleanchor="y"), yaxis=dict(visible=False, autorange="reversed"))
    return fig


# -- notebook 8 -----------------------------------------------------------------------------------

LABELS.update({"cpu_s": "CPU seconds of the run (process time, one thread)", "L": "layers L",
               "trace_numbers": "numbers kept per lane"})
#: the race's contestants: a colour each (the estimator's where it has one)
_RACE_COLORS = {"rhn-kf-rtrl": _FIXED["kf-rtrl"], "lru2-rtrl": _FIXED["rtrl"], "rhn-tbptt-16": "#ff7f0e"}


def race_figure(bands: dict[str, list[dict]], x: str = "cpu_s", title: str | None = None) -> go.Figure:
    """T_max of the copy curriculum against ``x`` (CPU seconds or steps) per contestant: the median
    over its seeds and a min–max band (``bands`` from experiments.race_bands; one seed: its line)."""
    fig = go.Figure()
    for name, rows in bands.items():
        color = _RACE_COLORS.get(name, method_color(name.split("-", 1)[-1]))
        xs = [r[x] for r in rows]
        seeds = rows[0]["seeds"] if rows else 0
        if seeds > 1:
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[r["high"] for r in rows] + [r["low"] for r in rows][::-1],
                                     fill="toself", line=dict(width=0), fillcolor=color, opacity=0.2,
                                     name=f"{name}: range over {seeds} seeds", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=[r["median"] for r in rows], mode="lines", line=dict(color=color, shape="hv"),
                                 name=f"{name}: median" if seeds > 1 else name))
    return _layout(fig, title or f"Copy task: T_max against {label(x)}", _axis(x), _axis("t_max"))


def depth_bias_figure(rows: list[dict], title: str | None = None,
                      groups=("layer 1 and up", "recurrent 1", "below layer 1", "all")) -> go.Figure:
    """The layer-wise gradient's relative error against BPTT through the stack, against the depth L,
    one line per parameter group (rows from experiments.layerwise_bias_by_depth); zeros (an exact
    group, to rounding) are drawn at 1e-32 so the log axis keeps them."""
    fig = go.Figure()
    floor = 1e-32
    values = []
    for group in groups:
        pts = sorted((r["L"], max(r["relative_error"], floor)) for r in rows if r["group"] == group)
        if not pts:
            continue
        values += [v for _, v in pts]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=group))
    depths = sorted({r["L"] for r in rows})
    fig = _layout(fig, title or "Layer-wise learning: relative error against depth", _axis("L"),
                  _axis("relative_error", values, log=True))
    return fig.update_layout(xaxis=dict(tickvals=depths))
