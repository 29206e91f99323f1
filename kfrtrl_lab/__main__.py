"""Command line: ``python -m kfrtrl_lab train copy|ptb ...`` and ``python -m kfrtrl_lab eval ptb ...``.

    python -m kfrtrl_lab train copy --method kf-rtrl --hidden 128 --batch 16 --steps 500000 --out runs/copy-kf
    python -m kfrtrl_lab train copy --out runs/copy-kf --resume          # continue after Ctrl-C
    python -m kfrtrl_lab train ptb --method uoro --hidden 256 --batch 32 --reset-every 100 --out runs/ptb-uoro
    python -m kfrtrl_lab eval ptb --checkpoint runs/ptb-uoro/checkpoint.pt --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from .methods import METHODS
from .ptb import PTBTask
from .train import TASKS, Diverged, RunConfig, load_model, train

DEFAULTS = {"copy": {"hidden": 128, "batch": 16}, "ptb": {"hidden": 256, "batch": 32}}


def _optional_int(text: str):
    return None if text.lower() in ("none", "0") else int(text)


def _optional_float(text: str):
    return None if text.lower() in ("none", "0") else float(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfrtrl_lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an RHN online on a task",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("task", choices=TASKS)
    t.add_argument("--method", default="kf-rtrl", help=f"gradient estimator: {', '.join(METHODS)}")
    t.add_argument("--hidden", type=int, help="hidden units n (default: 128 copy, 256 ptb)")
    t.add_argument("--batch", type=int, help="lanes B (default: 16 copy, 32 ptb)")
    t.add_argument("--lr", type=float, default=10**-3.5, help="Adam learning rate")
    t.add_argument("--steps", type=int, default=100_000, help="total time steps (also the target of --resume)")
    t.add_argument("--update-every", type=int, default=1, help="Adam step every N time steps")
    t.add_argument("--clip", type=_optional_float, default=1.0, help="clip the recurrent gradient to this norm ('none')")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    t.add_argument("--reset-every", type=_optional_int, default=100, help="ptb: reset every N characters ('none')")
    t.add_argument("--eval-every", type=int, default=10_000, help="ptb: validation BPC every N steps")
    t.add_argument("--log-every", type=int, default=100, help="metrics line every N steps")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0)
    t.add_argument("--data-dir", default=None, help="ptb: folder with ptb.char.{train,valid,test}.txt")
    t.add_argument("--out", required=True, help="run folder (metrics.jsonl, checkpoint.pt, summary.json)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--stop-after", type=int, default=None, help="stop (resumably) after this many total steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("task", choices=["ptb"])
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", choices=["valid", "test"], default="test")
    e.add_argument("--batch", type=int, default=32, help="evaluation streams")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", default="cpu")
    c = sub.add_parser("compare", help="markdown tables: run summaries against the papers' reference numbers")
    c.add_argument("summaries", nargs="+", help="summary.json files (e.g. results/*.json)")

    e.add_argument("--record", action="store_true",
                   help="also store the result under 'final_eval' in the run's summary.json (beside the checkpoint)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "compare":
        from .results import comparison_table, load_summary

        summaries = [load_summary(p) for p in args.summaries]
        for task in ("copy", "ptb"):
            if any(s["config"]["task"] == task for s in summaries):
                print(f"\n### {task}\n\n{comparison_table(summaries, task)}")
        return 0
    if args.command == "train":
        defaults = DEFAULTS[args.task]
        config = RunConfig(
            task=args.task, method=args.method, hidden=args.hidden or defaults["hidden"],
            batch=args.batch or defaults["batch"], lr=args.lr, steps=args.steps, update_every=args.update_every,
            clip=args.clip, seed=args.seed, device=args.device, threads=args.threads, reset_every=args.reset_every,
            eval_every=args.eval_every, log_every=args.log_every, checkpoint_minutes=args.checkpoint_minutes,
            data_dir=args.data_dir)
        try:
            summary = train(config, args.out, resume=args.resume, progress=not args.no_progress,
                            stop_after=args.stop_after)
        except Diverged as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
        last = summary["curve"][-1] if summary["curve"] else {}
        print(json.dumps({"status": summary["status"], "steps": summary["steps_done"], "wall_s": summary["wall_s"],
                          **{k: v for k, v in last.items() if k != "step"}}))
        return 0
    model, config, step = load_model(args.checkpoint, args.device)
    task = PTBTask(config.batch, reset_every=config.reset_every, data_dir=args.data_dir or config.data_dir,
                   device=args.device)
    result = {"step": step, **task.evaluate(model, args.split, batch_size=args.batch)}
    if args.record:
        summary_path = Path(args.checkpoint).with_name("summary.json")
        summary = json.loads(summary_path.read_text())
        summary.setdefault("final_eval", {}).update({f"{args.split}_bpc": result[f"{args.split}_bpc"],
                                                     "eval_step": step, "eval_batch": args.batch})
        summary_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps({"checkpoint": str(Path(args.checkpoint)), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
