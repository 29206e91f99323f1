"""Committed run summaries (``results/*.json``) against the reference numbers of
algorithms.md, section 8 (official OK code logs: copy with OK rank 16, PTB with OK rank 8)."""

from __future__ import annotations

import json
from pathlib import Path

from .runs import load_summary  # noqa: F401  (re-exported: results are run summaries)

#: task -> (metric, {step: reference value or (low, high)})
REFERENCE = {
    "copy": ("t_max", {100_000: 16, 200_000: 20, 500_000: 28, 1_000_000: (32, 37), 2_000_000: (38, 45)}),
    "ptb": ("valid_bpc", {100_000: 2.07, 200_000: 1.91, 500_000: 1.79, 1_000_000: (1.747, 1.750)}),
}


def value_at(summary: dict, metric: str, step: int):
    """The metric's last logged value at or before ``step`` (None if the run had not got there)."""
    rows = [r for r in summary["curve"] if metric in r and r["step"] <= step]
    if not rows or summary["steps_done"] < step:
        return None
    return rows[-1][metric]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        return f"{_fmt(v[0])}–{_fmt(v[1])}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def comparison_table(summaries: list[dict], task: str) -> str:
    """Markdown: one row per run, the metric at the reference steps, cost columns."""
    metric, ref = REFERENCE[task]
    steps = sorted(ref)
    head = ["run", *[f"{metric} @ {s // 1000}k" for s in steps], "steps done", "steps/s", "wall h", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| reference (OK) | " + " | ".join(_fmt(ref[s]) for s in steps) + " | | | | |"]
    for s in summaries:
        if s["config"]["task"] != task:
            continue
        c = s["config"]
        name = f"{c['method']} n={c['hidden']} B={c['batch']}"
        cells = [_fmt(value_at(s, metric, st)) for st in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['steps_done']} | {_fmt(s.get('median_steps_per_s'))}"
                     f" | {s['wall_s'] / 3600:.2f} | {s.get('device_name', c['device'])} |")
    return "\n".join(lines)


def comparison_tables(summaries: list[dict]) -> str:
    """One markdown table per task present in ``summaries``."""
    tasks = dict.fromkeys(s["config"]["task"] for s in summaries)
    return "\n".join(f"\n### {task}\n\n{comparison_table(summaries, task)}" for task in tasks)


def benchmark_rows(path: str | Path, device: str = "cpu") -> list[dict]:
    """Rows {method, n, ms_per_step, peak_MB} from a ``benchmarks/step_cost.py --json`` file,
    with the bare batched product H·A as method "bare H·A"."""
    data = json.loads(Path(path).read_text())
    (dev,) = [d for d in data["devices"] if d["device"] == device]
    rows = [{"method": r["method"], "n": r["n"], "ms_per_step": r["ms"], "peak_MB": r["peak_bytes"] / 2**20}
            for r in dev["results"]]
    rows += [{"method": "bare H·A", "n": int(n), "ms_per_step": v["ms"]} for n, v in dev["bare_bmm"].items()]
    return rows
