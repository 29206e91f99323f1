"""Executed notebooks and offline HTML reports.

``python -m kfrtrl_lab.notebook.reports --profile quick`` runs every ``notebooks/NN_*.ipynb`` under
papermill into ``reports/`` and renders each to HTML that needs no network: plotly.js is
embedded in the page (the notebooks use plotly's offline renderer) and MathJax is copied
next to the pages from the ``jupyter_server_mathjax`` package instead of loading from a CDN.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("quick", "full")


def notebooks(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def execute(notebook: Path, out_dir: Path, profile: str = "quick", **parameters) -> Path:
    """Run ``notebook`` with papermill (parameters: ``profile`` plus overrides) into ``out_dir``."""
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    papermill.execute_notebook(str(notebook), str(target), parameters={"profile": profile, **parameters},
                               cwd=str(notebook.parent), kernel_name="python3", progress_bar=False)
    return target


def mathjax_folder(out_dir: Path) -> str:
    """Copy MathJax (2.7, from jupyter_server_mathjax) into ``out_dir/mathjax`` once; returns the
    URL the pages use, relative to ``out_dir``."""
    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dst = out_dir / "mathjax"
    if not (dst / "MathJax.js").exists():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    return "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def to_html(executed: Path, out_dir: Path) -> Path:
    """Render an executed notebook to ``out_dir/<name>.html`` with local MathJax."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", mathjax_url=mathjax_folder(out_dir))
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    # require.js is only needed by live widget managers, which a static report has none of;
    # dropping its CDN tag keeps the page free of network requests
    body = body.replace(f'<script src="{exporter.require_js_url}"></script>', "")
    target = out_dir / (executed.stem + ".html")
    target.write_text(body, encoding="utf-8")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="quick")
    p.add_argument("--out", default=str(ROOT / "reports"))
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run (e.g. 01 03)")
    args = p.parse_args(argv)
    out = Path(args.out)
    for nb in notebooks():
        if args.only and not any(nb.name.startswith(o) for o in args.only):
            continue
        start = time.perf_counter()
        executed = execute(nb, out, profile=args.profile)
        html = to_html(executed, out)
        print(f"{nb.name}: executed and rendered to {html} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
