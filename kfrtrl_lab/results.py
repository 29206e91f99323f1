"""Committed run summaries (``results/*.json``) against the reference numbers of algorithms.md,
section 8, each of which names the estimator and the source it comes from: a curve is compared
only with the reference of its own estimator."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .runs import load_summary  # noqa: F401  (re-exported: results are run summaries)


@dataclass(frozen=True)
class Reference:
    """Published numbers of one estimator on one task: ``points`` maps a step to a value or a
    (low, high) range over the source's runs; ``final`` is a number given without a step."""

    task: str
    metric: str
    method: str  # the estimator that produced them, in this package's spelling
    setting: str
    source: str
    points: dict
    final: float | None = None

    @property
    def label(self) -> str:
        return f"{self.method.upper().replace('-OFFICIAL', ' (official scaling)')}, {self.source}"

    def matches(self, method: str) -> bool:
        """The same estimator: OK-r with either scaling is compared with OK-r's logs (the logs used
        the official scaling; the minimum-variance one is the same estimator family with less noise)."""
        return method.removesuffix("-official") == self.method.removesuffix("-official")


REFERENCES = [
    Reference("copy", "t_max", "ok-16-official", "RHN n=128, B=16", "official OK code logs, 5 runs",
              {10_000: 4, 50_000: (11, 12), 100_000: (15, 17), 200_000: (19, 21), 500_000: (25, 30),
               1_000_000: (32, 37), 2_000_000: (38, 45)}),
    Reference("ptb", "valid_bpc", "ok-8-official", "RHN n=256, B=32", "official OK code logs, 5 runs",
              {10_000: 2.97, 20_000: (2.70, 2.71), 50_000: (2.31, 2.32), 100_000: (2.07, 2.08), 200_000: 1.91,
               500_000: (1.79, 1.80), 1_000_000: (1.747, 1.750)}),
    Reference("copy", "t_max", "kf-rtrl", "RHN, copy task", "KF-RTRL paper's text (secondary source), no log",
              {}, final=36),
    Reference("ptb", "valid_bpc", "kf-rtrl", "RHN, char-PTB", "KF-RTRL paper's text (unverified), no log",
              {}, final=1.77),
]


def references_for(task: str, metric: str, methods) -> list[Reference]:
    """The references of ``task``/``metric`` whose estimator is among ``methods``."""
    return [ref for ref in REFERENCES if ref.task == task and ref.metric == metric
            and any(ref.matches(m) for m in methods)]


def value_at(summary: dict, metric: str, step: int):
    """The metric's last logged value at or before ``step`` (None if the run had not got there)."""
    rows = [r for r in summary["curve"] if metric in r and r["step"] <= step]
    if not rows or summary["steps_done"] < step:
        return None
    return rows[-1][metric]


def steps_reached(runs: list[dict]) -> list[tuple[int, int]]:
    """(steps done, rounded to two significant digits; number of seeds), longest first: seeds stopped
    at 50,000, 50,026 and 50,211 steps all went to 50k, and say so as one group."""
    counts: dict[int, int] = {}
    for s in runs:
        n = int(s["steps_done"])
        rounded = round(n, 2 - len(str(n))) if n >= 100 else n
        counts[rounded] = counts.get(rounded, 0) + 1
    return sorted(counts.items(), reverse=True)


def format_steps(n: int) -> str:
    """200000 -> "200k", 1500000 -> "1.5M", 800 -> "800"."""
    if n >= 1_000_000:
        return f"{n / 1e6:g}M"
    return f"{n / 1e3:g}k" if n >= 1000 else str(n)


def late_mean(summary: dict, metric: str, fraction: float = 0.1) -> float:
    """Mean of the metric over the last ``fraction`` of the logged lines: one line's per-step loss
    is too noisy to judge a run by."""
    rows = [r[metric] for r in summary["curve"] if metric in r]
    if not rows:
        raise ValueError(f"the run logged no {metric!r}")
    tail = rows[-max(1, round(len(rows) * fraction)):]
    return sum(tail) / len(tail)


def run_group(summary: dict) -> str:
    """What distinguishes a configuration apart from its seed: "ok-16-official n=128 B=16 clip 16",
    plus every other setting that differs from the defaults (lr, update_every, the PTB layouts)."""
    c = summary["config"]
    cell = "" if c.get("cell", "rhn") == "rhn" else f" {c['cell']}"
    clip = f" clip {c['clip']:g}" if c.get("clip") is not None else " no clip"
    other = []
    if not math.isclose(c.get("lr", 10**-3.5), 10**-3.5, rel_tol=1e-4):  # older summaries stored 0.00031623
        other.append(f"lr {c['lr']:.3g}")
    if c.get("update_every", 1) != 1:
        other.append(f"update every {c['update_every']}")
    if c["task"] == "ptb":
        if c.get("reset_every", 100) != 100:
            other.append(f"reset every {c['reset_every']}")
        if c.get("stream_layout", "contiguous") != "contiguous":
            other.append(c["stream_layout"])
        if c.get("tokens", "plain") != "plain":
            other.append(f"{c['tokens']} tokens")
    return f"{c['method']}{cell} n={c['hidden']} B={c['batch']}{clip}" + "".join(f", {o}" for o in other)


#: statuses of runs whose curves are averaged with their seeds; the others are shown apart
COMPLETE = ("finished", "stopped")


def run_identity(summary: dict) -> str:
    """What makes two summaries one run: its configuration, seed included, without the settings of a
    session (steps, threads, device, ...), which a resumed run may change."""
    from .train import EXECUTION_SETTINGS

    return json.dumps({k: v for k, v in summary["config"].items() if k not in EXECUTION_SETTINGS}, sort_keys=True,
                      default=str)


def distinct_runs(summaries: list[dict]) -> tuple[list[dict], list[str]]:
    """One summary per run (the furthest, when the same run was given twice: the same file, a copy,
    an earlier summary of it), in the order given; and a note for each one left out."""
    kept: dict[str, dict] = {}
    notes = []
    for s in summaries:
        key = run_identity(s)
        other = kept.get(key)
        if other is None:
            kept[key] = s
            continue
        first, second = (other, s) if other["steps_done"] >= s["steps_done"] else (s, other)
        kept[key] = first
        notes.append(f"{second.get('path', 'a summary')} left out: the same run (seed {s['config']['seed']}) as "
                     f"{first.get('path', 'another summary')}, which got as far or further")
    return list(kept.values()), notes


def group_by_configuration(summaries: list[dict]) -> dict[str, list[dict]]:
    """The runs of each configuration (:func:`run_group`), each run once (:func:`distinct_runs`);
    diverged and interrupted runs form groups of their own ("… [diverged]"), so that they never
    enter the bands of the runs that completed."""
    groups: dict[str, list[dict]] = {}
    for s in distinct_runs(summaries)[0]:
        status = s.get("status", "finished")
        groups.setdefault(run_group(s) + ("" if status in COMPLETE else f" [{status}]"), []).append(s)
    return {k: sorted(v, key=lambda s: s["config"]["seed"]) for k, v in groups.items()}


def seed_band(runs: list[dict], metric: str, steps=None, min_seeds: int | None = None) -> list[dict]:
    """At each logged step (or each of ``steps``) that at least ``min_seeds`` runs reached (half of
    them, rounded up, by default): median, min and max over the seeds that reached it, and their
    number ``seeds`` — so one seed stopped early shortens nothing but its own contribution."""
    need = min_seeds or math.ceil(len(runs) / 2)
    if steps is None:
        steps = sorted({r["step"] for s in runs for r in s["curve"] if metric in r})
    rows = []
    for step in steps:
        values = [v for v in (value_at(s, metric, step) for s in runs) if v is not None]
        if len(values) < max(need, 1):
            continue
        rows.append({"step": step, "median": statistics.median(values), "low": min(values), "high": max(values),
                     "seeds": len(values)})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        return f"{_fmt(v[0])}–{_fmt(v[1])}"
    if isinstance(v, float):
        return f"{v:g}" if v.is_integer() or abs(v) >= 10 else f"{v:.3f}"
    return str(v)


def comparison_table(summaries: list[dict], task: str) -> str:
    """Markdown: one row per configuration (seeds aggregated: median and range over the seeds) with
    the metric at the reference steps, then the reference rows of the estimators present."""
    runs = [s for s in summaries if s["config"]["task"] == task]
    metric = next((r.metric for r in REFERENCES if r.task == task), None)
    if metric is None:
        raise ValueError(f"no reference numbers for task {task!r}; tasks with references: "
                         f"{sorted({r.task for r in REFERENCES})}")
    refs = references_for(task, metric, {s["config"]["method"] for s in runs})
    steps = sorted({step for ref in REFERENCES if ref.task == task for step in ref.points})
    head = ["run", "seeds", *[f"{metric} @ {s // 1000}k" for s in steps], "steps done", "steps/s", "wall h", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, group in group_by_configuration(runs).items():
        cells = []
        for step in steps:
            band = seed_band(group, metric, [step])
            if not band:
                cells.append("–")
                continue
            b = band[0]
            spread = [] if b["low"] == b["high"] else [f"{_fmt(b['low'])}–{_fmt(b['high'])}"]
            fewer = [f"{b['seeds']} of {len(group)} seeds"] if b["seeds"] < len(group) else []
            cells.append(_fmt(b["median"]) + (f" ({'; '.join(spread + fewer)})" if spread + fewer else ""))
        reached = steps_reached(group)
        done = format_steps(reached[0][0]) if len(reached) == 1 else ", ".join(
            f"{format_steps(steps)} ({count})" for steps, count in reached)
        rates = [s["median_steps_per_s"] for s in group if s.get("median_steps_per_s")]
        devices = sorted({s.get("device_name", s["config"]["device"]) for s in group})
        lines.append(f"| {name} | {', '.join(str(s['config']['seed']) for s in group)} | " + " | ".join(cells)
                     + f" | {done} | {_fmt(statistics.median(rates)) if rates else '–'}"
                     f" | {max(s['wall_s'] for s in group) / 3600:.2f} | {', '.join(devices)} |")
    for ref in refs:
        cells = [_fmt(ref.points.get(step)) for step in steps]
        final = f" (final: {ref.final:g})" if ref.final is not None else ""
        lines.append(f"| reference: {ref.label}{final} | | " + " | ".join(cells) + " | | | | |")
    return "\n".join(lines)


def comparison_tables(summaries: list[dict]) -> str:
    """One markdown table per task present in ``summaries``, then a line for each summary left out
    as a duplicate of another run's."""
    tasks = dict.fromkeys(s["config"]["task"] for s in summaries)
    notes = distinct_runs(summaries)[1]
    return "\n".join([f"\n### {task}\n\n{comparison_table(summaries, task)}" for task in tasks]
                     + ([""] + [f"- {note}" for note in notes] if notes else []))


def benchmark_rows(path: str | Path, device: str = "cpu") -> list[dict]:
    """Rows {method, n, ms_per_step, peak_MB} from a ``benchmarks/step_cost.py --json`` file,
    with the bare batched product H·A as method "bare H·A"."""
    data = json.loads(Path(path).read_text())
    (dev,) = [d for d in data["devices"] if d["device"] == device]
    rows = [{"method": r["method"], "n": r["n"], "ms_per_step": r["ms"], "peak_MB": r["peak_bytes"] / 2**20}
            for r in dev["results"]]
    rows += [{"method": "bare H·A", "n": int(n), "ms_per_step": v["ms"]} for n, v in dev["bare_bmm"].items()]
    return rows
