"""Live controls for the notebooks. Each builder returns ``(widget, handles)``: the widget to
display, and the controls plus the callback, so a test can move a slider and read the figure
without a kernel."""

from __future__ import annotations

import ipywidgets as widgets

from .experiments import variance_sweep
from .figures import variance_figure


def variance_explorer_figure(n: int, T_max: int, samples: int, methods, lengths=(5, 10, 20, 40), seed: int = 0):
    """Relative variance against T (T ≤ T_max from ``lengths``) for a random RHN of size n."""
    Ts = [T for T in lengths if T <= T_max] or [min(lengths)]
    rows = variance_sweep([n], Ts, methods=tuple(methods), samples=samples, seed=seed)
    return variance_figure(rows, x="T", title=f"Relative variance, random RHN n={n}, {samples} samples")


def variance_explorer(n_options=(8, 16, 32, 64), lengths=(5, 10, 20, 40), samples_options=(25, 50, 100, 200),
                      methods=("kf-rtrl", "uoro"), seed: int = 0):
    """Sliders for n, T_max, the number of samples and the estimators; on every change the figure
    is recomputed and drawn into ``handles["output"]``. The first figure is only stored in
    ``handles["figure"]`` (show it as a cell result): drawing into an Output widget while a
    notebook runs headlessly can stall papermill's kernel client."""
    handles = {
        "n": widgets.SelectionSlider(options=list(n_options), value=n_options[1], description="n"),
        "T_max": widgets.SelectionSlider(options=list(lengths), value=lengths[-1], description="T max"),
        "samples": widgets.SelectionSlider(options=list(samples_options), value=samples_options[1],
                                           description="samples"),
        "methods": widgets.SelectMultiple(options=list(methods), value=tuple(methods), description="estimators"),
        "output": widgets.Output(),
        "figure": None,
    }

    def update(change=None, draw=True):
        chosen = handles["methods"].value or (methods[0],)
        fig = variance_explorer_figure(handles["n"].value, handles["T_max"].value, handles["samples"].value,
                                       chosen, lengths=lengths, seed=seed)
        handles["figure"] = fig
        if draw:
            handles["output"].clear_output(wait=True)
            with handles["output"]:
                fig.show()
        return fig

    for key in ("n", "T_max", "samples", "methods"):
        handles[key].observe(update, names="value")
    handles["update"] = update
    update(draw=False)
    controls = widgets.HBox([widgets.VBox([handles["n"], handles["T_max"], handles["samples"]]), handles["methods"]])
    return widgets.VBox([controls, handles["output"]]), handles
