"""Student versions of the lessons: ``python -m kfrtrl_lab.notebook.student --out student``.

Each ``notebooks/NN_*.ipynb`` is written to ``student/`` with every cell tagged ``solution``
removed. The ``check`` cell after each exercise stays and is tagged ``raises-exception``, so the
notebook still runs top to bottom (``papermill``, ``Run All``) while the stubs raise
``NotImplementedError``: each exercise shows its own error until the student completes it.
``--execute`` runs the student versions (quick profile) and fails unless the only errors are
``NotImplementedError`` in check cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .reports import ROOT, notebooks

STUDENT_NOTE = ("*Student version: the solutions are removed. Complete each cell marked "
                "`# EXERCISE` and run the check cell below it.*")


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def student_version(nb):
    """A copy of ``nb`` without its solution cells; check cells may raise."""
    import copy

    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if "solution" not in tags(c)]
    for cell in out.cells:
        if "check" in tags(cell) and "raises-exception" not in tags(cell):
            cell.metadata["tags"] = tags(cell) + ["raises-exception"]
    return out


def write_students(out_dir: Path, sources: list[Path] | None = None) -> list[Path]:
    import nbformat

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources or notebooks():
        nb = student_version(nbformat.read(path, as_version=4))
        first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
        if first is not None and STUDENT_NOTE not in first.source:
            first.source = first.source + "\n\n" + STUDENT_NOTE
        target = out_dir / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def errors(executed) -> list[tuple[int, str, list[str]]]:
    """(cell index, exception name, tags) of every error output in an executed notebook."""
    found = []
    for i, cell in enumerate(executed.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, out.get("ename", "?"), tags(cell)))
    return found


def check_executed(executed) -> list[str]:
    """Problems with an executed student notebook: an error other than NotImplementedError, an
    error outside a check cell, or a check cell that did not fail (its exercise is unsolved)."""
    problems = []
    failed = set()
    for i, name, cell_tags in errors(executed):
        failed.add(i)
        if name != "NotImplementedError" or "check" not in cell_tags:
            problems.append(f"cell {i} ({', '.join(cell_tags) or 'untagged'}): {name}")
    for i, cell in enumerate(executed.cells):
        if "check" in tags(cell) and i not in failed:
            problems.append(f"cell {i}: check passed without a solution")
    return problems


def main(argv=None) -> int:
    import nbformat

    from papermill.exceptions import PapermillExecutionError

    from .reports import execute

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "student"))
    p.add_argument("--only", nargs="*", help="notebook name prefixes (e.g. 01 03)")
    p.add_argument("--execute", action="store_true", help="run the student versions and check their errors")
    args = p.parse_args(argv)
    chosen = [nb for nb in notebooks() if not args.only or any(nb.name.startswith(o) for o in args.only)]
    out = Path(args.out)
    written = write_students(out, chosen)
    print(f"{len(written)} student notebooks in {out}/")
    if not args.execute:
        return 0
    import os
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    bad = 0
    for path in written:
        # run beside the instructor notebooks, whose relative paths (../results) they share
        try:
            executed_path = execute(path, out / "executed", profile="quick", progress=None, cwd=ROOT / "notebooks")
        except PapermillExecutionError:
            # papermill runs past the check cells (tagged raises-exception) but still raises at the end
            # for any error output; the executed notebook it wrote is what is judged below
            executed_path = out / "executed" / path.name
        problems = check_executed(nbformat.read(executed_path, as_version=4))
        checks = sum("check" in tags(c) for c in nbformat.read(path, as_version=4).cells)
        print(f"{path.name}: {checks} exercises stop at NotImplementedError" if not problems
              else f"{path.name}: " + "; ".join(problems))
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
