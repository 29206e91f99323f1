"""Command line of kfrtrl_lab.

    python -m kfrtrl_lab train copy --method kf-rtrl --steps 500000 --out runs/copy-kf   # train online
    python -m kfrtrl_lab train copy --out runs/copy-kf --steps 1000000 --resume          # continue a run
    python -m kfrtrl_lab train ptb --method uoro --cell lstm --out runs/ptb-uoro
    python -m kfrtrl_lab eval ptb --checkpoint runs/ptb-uoro/checkpoint.pt --split test  # held-out BPC
    python -m kfrtrl_lab compare results/*.json           # run summaries against the reference numbers
    python -m kfrtrl_lab methods                          # the registered estimators
    python -m kfrtrl_lab certify ok-4 --cell lstm         # an HTML certificate of one estimator
    python -m kfrtrl_lab sweep run sweeps/smoke.toml --executor local   # a grid of runs (or --executor slurm)
    python -m kfrtrl_lab sweep status sweeps/smoke.toml   # where each run of the grid stands

Exit status: 0 done; 1 certify: the estimator failed its certificate (biased, or not exact though it
claims to be); 2 bad arguments, files or data (one line: the option or file, and what was expected);
3 the run diverged; 130 interrupted (Ctrl-C or SIGTERM; resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .estimators import METHODS
from .runs import RunFolder
from .tasks import TASKS
from .train import Diverged, RunConfig, load_model, train, train_seeds

EXIT_FAILED_CERTIFICATE, EXIT_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _seed_list(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' -> [0, 2, 7]."""
    try:
        if "-" in text.strip("-"):
            low, high = (int(v) for v in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-4 or 0,2,7, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and at least one, got {text!r}")
    return seeds


def _optional(convert):
    def parse(text: str):
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = convert.__name__
    return parse


_TYPES = {"int": int, "float": float, "str": str, "int | None": _optional(int), "float | None": _optional(float),
          "str | None": str}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per RunConfig field (except the task): help and defaults come from the dataclass.
    Options not given stay unset, so ``--resume`` can take them from the checkpoint."""
    for f in dataclasses.fields(RunConfig):
        if f.name == "task":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                                help=f.metadata["help"])
            continue
        shown = "" if f.default is None else f" (default: {f.default:g})" if isinstance(f.default, float) \
            else f" (default: {f.default})"
        parser.add_argument(flag, dest=f.name, type=_TYPES[f.type], default=argparse.SUPPRESS,
                            help=f.metadata["help"] + shown)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfrtrl_lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,compare,methods,certify,sweep}")

    t = sub.add_parser("train", help="train a model online on a task", description=(
        "Train online, an update every --update-every steps. With --resume, options not given are "
        "taken from the checkpoint in --out."))
    t.add_argument("task", choices=list(TASKS))
    _add_config_options(t)
    t.add_argument("--out", required=True, help="run folder (run.json, metrics.jsonl, checkpoint.pt, summary.json)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--seeds", type=_seed_list, default=None,
                   help="several seeds in one process, e.g. 0-4 or 0,2,7: a run each in OUT/seed-<s> (replaces --seed)")
    t.add_argument("--stop-after", type=int, default=None,
                   help="stop (resumably) after this many total steps (a positive int)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="score a checkpoint on held-out data")
    e.add_argument("task", choices=[name for name, cls in TASKS.items() if cls.evaluates])
    e.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt, or its run folder")
    e.add_argument("--split", choices=["valid", "test"], default="test", help="(default: test)")
    e.add_argument("--batch", type=int, default=32, help="evaluation streams (default: 32)")
    e.add_argument("--data-dir", default=None, help="folder with the task's data (default: the run's)")
    e.add_argument("--device", default="cpu", help="(default: cpu)")
    e.add_argument("--record", action="store_true",
                   help="also store the result under 'final_eval' in the run's summary.json (beside the checkpoint)")

    c = sub.add_parser("compare", help="markdown tables: run summaries against the papers' reference numbers")
    c.add_argument("summaries", nargs="+", help="summary.json files (e.g. results/*.json), or folders: every "
                                                "summary.json below them")

    sub.add_parser("methods", help="list the registered gradient estimators")

    z = sub.add_parser("certify", help="an HTML certificate of one estimator: unbiasedness, error against n and T, "
                                       "cost", description="Executes the certificate notebook for METHOD and writes "
                                       "OUT/certificate-METHOD-CELL.html.")
    z.add_argument("method", help="a registered estimator (see 'methods'), or one registered by --plugin")
    z.add_argument("--cell", default="rhn", help="rhn, tanh, lstm, or lru for a method that supports it (default: rhn)")
    z.add_argument("--plugin", default=None, help="a .py file that registers the method with kl.register_method")
    z.add_argument("--profile", choices=["quick", "full"], default="full", help="quick: small sizes (default: full)")
    z.add_argument("--out", default="certificates", help="folder for the page (default: certificates)")

    _add_sweep_parser(sub)
    return p


def _add_sweep_parser(sub) -> None:
    """``sweep run|status|collect SPEC``: a grid of runs from a TOML spec (kfrtrl_lab/sweep.py)."""
    w = sub.add_parser("sweep", help="a grid of training runs from a TOML spec: run (here or on Slurm), status, "
                                     "collect", description="A spec (sweeps/*.toml) expands to runs with stable "
                                     "names, one run folder each in OUT/<task>/<name>. Re-running 'sweep run' skips "
                                     "finished runs and resumes the others.")
    actions = w.add_subparsers(dest="action", required=True)
    r = actions.add_parser("run", help="run the spec's runs that are not finished (resume those with a checkpoint)")
    s = actions.add_parser("status", help="a table: run, state, step, last metric, steps/s, time left (running runs), host")
    c = actions.add_parser("collect", help="copy the runs' summaries to RESULTS/<task>/<name>.json, where 'compare' "
                                           "reads them")
    for a in (r, s, c):
        a.add_argument("spec", help="a sweep spec (TOML), e.g. sweeps/smoke.toml")
        a.add_argument("--out", default=None, help="the sweep's folder (default: the spec's 'out', else "
                                                   "runs/sweeps/<spec name>)")
    r.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local: a process pool on this machine; slurm: one job per run through submitit (default: local)")
    r.add_argument("--workers", type=int, default=None, help="local: runs at a time (default: cores // threads)")
    r.add_argument("--partition", default=None, help="slurm: partition")
    r.add_argument("--time", default=None, help="slurm: a job's time limit, minutes or [D-]HH:MM[:SS] (past it the "
                                                "job checkpoints and is requeued) (default: the spec's, else 24:00:00)")
    r.add_argument("--cpus", type=int, default=None, help="slurm: CPUs a job, also its torch threads (default: 1)")
    r.add_argument("--gpus", type=int, default=None, help="slurm: GPUs a job (default: the spec's, else 0)")
    r.add_argument("--array-parallelism", type=int, default=None,
                   help="slurm: jobs of the array running at once (default: 64)")
    r.add_argument("--max-requeues", type=int, default=None,
                   help="slurm: time-outs a job may be requeued after (default: 30)")
    r.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: any other sbatch option, e.g. --slurm-option account=proj --slurm-option qos=high")
    c.add_argument("--results", default="results", help="where the summaries go (default: results)")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as err:  # bad input: options, files, folders, data, permissions
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(err: Exception) -> str:
    """The error as one line; an OS error raised by the system (not by this package) names its file."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


def _train(args) -> int:
    if not args.out:  # "" would be the current folder
        raise ValueError("--out is an empty string; give the run folder")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if hasattr(args, f.name)}
    if args.resume:
        first = Path(args.out) / f"seed-{args.seeds[0]}" if args.seeds else Path(args.out)
        saved = RunFolder(first).load_checkpoint(map_location="cpu")["config"]
        if saved["task"] != args.task:
            raise ValueError(f"--resume: {args.out} holds a {saved['task']} run, not {args.task}")
        given = {**saved, **given}
    config = RunConfig(**{**given, "task": args.task})
    try:
        if args.seeds:
            summaries = train_seeds(config, args.seeds, args.out, resume=args.resume, progress=not args.no_progress,
                                    stop_after=args.stop_after)
        else:
            summaries = [train(config, args.out, resume=args.resume, progress=not args.no_progress,
                               stop_after=args.stop_after)]
    except Diverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    for summary in summaries:
        last = summary["curve"][-1] if summary["curve"] else {}
        print(json.dumps({"seed": summary["config"]["seed"], "status": summary["status"],
                          "steps": summary["steps_done"], "wall_s": summary["wall_s"],
                          **{k: v for k, v in last.items() if k not in ("step", "evaluated")}}))
    if any(s["status"] == "interrupted" for s in summaries):
        seeds = f" --seeds {','.join(map(str, args.seeds))}" if args.seeds else ""
        print(f"interrupted; continue with: python -m kfrtrl_lab train {args.task} --out {args.out}{seeds} --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _eval(args) -> int:
    model, config, step = load_model(args.checkpoint, args.device)
    folder = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    if config.task != args.task:
        raise ValueError(f"{args.checkpoint} is a {config.task} run; 'eval {args.task}' needs a {args.task} run")
    config = dataclasses.replace(config, data_dir=args.data_dir or config.data_dir)
    task = TASKS[config.task].from_config(config, args.device)
    scores = task.evaluate(model, args.split, batch_size=args.batch)
    if args.record:
        RunFolder(folder).record_eval({**scores, "eval_step": step, "eval_batch": args.batch})
    print(json.dumps({"checkpoint": str(Path(args.checkpoint)), "step": step, **scores}))
    return 0


def _compare(args) -> int:
    from .results import comparison_tables, load_summary

    paths = []
    for given in map(Path, args.summaries):
        if given.is_dir():
            found = sorted(given.rglob("summary.json"))
            if not found:
                raise FileNotFoundError(f"{given} is a folder with no summary.json below it; give summary files "
                                        f"(e.g. results/copy/*.json) or run folders")
            paths += found
        else:
            paths.append(given)
    print(comparison_tables([{**load_summary(p), "path": str(p)} for p in paths]))
    return 0


def _methods(args) -> int:
    for name, cls in METHODS.items():
        kind = "stochastic" if cls.stochastic else "deterministic"
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {kind:<13} {doc}")
    return 0


def _certify(args) -> int:
    from .notebook.certificate import certify

    page, verdict = certify(args.method, args.out, cell=args.cell, plugin=args.plugin, profile=args.profile)
    print(verdict["summary"])
    print(f"certificate written to {page}")
    return 0 if verdict["passed"] else EXIT_FAILED_CERTIFICATE


def _sweep(args) -> int:
    from . import sweep

    spec = sweep.load_spec(args.spec, args.out)
    if args.action == "status":
        print(sweep.status_table(sweep.sweep_status(spec)))
        return 0
    if args.action == "collect":
        written = sweep.collect(spec, args.results)
        if written:
            print(f"compare them: python -m kfrtrl_lab compare {' '.join(str(p) for p in written)}")
        return 0
    if args.executor == "local":
        return sweep.run_local(spec, args.workers)
    given = {k: getattr(args, k) for k in ("partition", "time", "cpus", "gpus", "array_parallelism", "max_requeues")
             if getattr(args, k) is not None}
    options = dict(spec.slurm.get("options", {}))
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-option takes KEY=VALUE, got {item!r}")
        options[key] = value
    slurm = {**spec.slurm, **given}
    cpus = int(slurm.get("cpus", 1))
    executor = sweep.make_executor(spec.out / ".sweep" / "submitit", "slurm", name=spec.name,
                                   partition=slurm.get("partition"),
                                   time_min=sweep.parse_minutes(slurm.get("time", "24:00:00")), cpus=cpus,
                                   gpus=int(slurm.get("gpus", 0)),
                                   array_parallelism=int(slurm.get("array_parallelism", 64)),
                                   max_requeues=int(slurm.get("max_requeues", 30)), options=options)
    jobs = sweep.submit(spec, executor, "slurm", threads=cpus)
    if jobs:
        print(f"follow them: python -m kfrtrl_lab sweep status {args.spec}" + (f" --out {args.out}" if args.out else ""))
    return 0


COMMANDS = {"train": _train, "eval": _eval, "compare": _compare, "methods": _methods, "certify": _certify,
            "sweep": _sweep}

if __name__ == "__main__":
    sys.exit(main())
