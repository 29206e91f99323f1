"""Copy the summaries of finished (or stopped) run folders into results/<task>/<method>-s<seed>.json.

    python tools/collect_results.py /work/runs/copy-* /work/runs/ptb-* [--note "…"]
    python tools/collect_results.py --snapshot /work/runs/copy-*     # runs still going: status "stopped"

Only summary.json travels (a few kB: curves thinned to ≤ 400 points); checkpoints and data never
do. A summary already in results/ is replaced by the newer one of the same run.
"""

import argparse
import json
from pathlib import Path

from kfrtrl_lab.runs import RunFolder, load_summary

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (each with summary.json)")
    p.add_argument("--note", default=None, help="a note to store in each summary (e.g. how it was run)")
    p.add_argument("--snapshot", action="store_true",
                   help="for a run without summary.json (still going), summarise its metrics so far")
    args = p.parse_args()
    for folder in map(Path, args.runs):
        source = folder / "summary.json"
        if source.exists():
            summary = load_summary(source)
        elif args.snapshot and (folder / "metrics.jsonl").exists():
            run = RunFolder(folder)
            rows = run.read_metrics()
            if not rows:
                print(f"skip {folder}: nothing logged yet")
                continue
            summary = run.summary("stopped", wall_s=rows[-1].get("wall_s", 0.0), steps=rows[-1]["step"])
        else:
            print(f"skip {folder}: no summary.json")
            continue
        c = summary["config"]
        target = RESULTS / c["task"] / f"{c['method']}-s{c['seed']}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        if args.note:
            summary["note"] = args.note
        target.write_text(json.dumps(summary, indent=1))
        print(f"{folder} -> {target.relative_to(RESULTS.parent)} ({summary['status']}, {summary['steps_done']} steps)")


if __name__ == "__main__":
    main()
