"""Executed notebooks and offline HTML reports.

``python -m kfrtrl_lab.notebook.reports --profile quick`` runs every ``notebooks/NN_*.ipynb`` under
papermill into ``reports/`` and renders each to HTML that needs no network: plotly.js is
embedded once per page (the notebooks use plotly's offline renderer), MathJax 3 with its fonts
is copied next to the pages, and the widget manager that nbconvert would load from a CDN is left
out (a static page has no kernel for the controls to talk to). Once every notebook has run, the
course site is built from the executed notebooks into ``reports/site/`` (:mod:`.site`).

``python -m kfrtrl_lab.notebook.reports --strip`` puts the committed notebooks back in their
clean form after JupyterLab has opened them (see :func:`strip`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: set while papermill runs a notebook for a static report (see widgets.Explorer)
STATIC_REPORT = "KFRTRL_STATIC_REPORT"
PROFILES = ("quick", "full")
MB = 1024 * 1024

# The lab template, less what it loads from CDNs: require.js (only live widget managers use it),
# the widget manager (to_html drops the widget state and puts a note for each widget view) and
# mermaid.js (no notebook draws diagrams; one would show as text). MathJax 3 is configured like
# nbconvert's MathJax 2 block ($…$ inline, AMS numbering), and an undefined macro is an error
# (which the browser check reports) rather than its name in red.
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], processEscapes: true,
                        processEnvironments: true, tags: "ams", packages: {"[-]": ["noundefined"]}}};
</script>
<script src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}
"""
WIDGET_NOTE = "[interactive controls: they run when the notebook is opened in JupyterLab]"


def notebooks(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def execute(notebook: Path, out_dir: Path, profile: str = "quick", progress=print, cwd: Path | None = None,
            **parameters) -> Path:
    """Run ``notebook`` with papermill (parameters: ``profile`` plus overrides) into ``out_dir``,
    in ``cwd`` (default: the notebook's folder), reporting each code cell and its time to
    ``progress`` (None: silent)."""
    import papermill
    from traitlets.config import Config

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    clock = {"cells": 0, "done": 0}

    def notebook_start(notebook, **_):
        clock["cells"] = sum(c.cell_type == "code" and bool(c.source.strip()) for c in notebook.cells)

    def cell_start(cell, **_):
        clock["start"] = time.perf_counter()

    def cell_executed(cell, execute_reply, **_):
        clock["done"] += 1
        status = execute_reply["content"]["status"]
        first = cell.source.strip().splitlines()[0]
        progress(f"  [{clock['done']:>2}/{clock['cells']}] {time.perf_counter() - clock['start']:6.1f} s  "
                 f"{first[:70]}{' …' if len(first) > 70 else ''}{'' if status == 'ok' else '  <- ' + status}")

    hooks = {"on_notebook_start": notebook_start, "on_cell_start": cell_start, "on_cell_executed": cell_executed}
    # the kernel inherits this: explorers then also show their first figure as a plain output,
    # which is what a static page can show (widgets.STATIC_REPORT)
    previous = os.environ.get(STATIC_REPORT)
    os.environ[STATIC_REPORT] = "1"
    try:
        papermill.execute_notebook(str(notebook), str(target), parameters={"profile": profile, **parameters},
                                   cwd=str(cwd or notebook.parent), kernel_name="python3", progress_bar=False,
                                   # IPC sockets instead of TCP: nothing for other users of the machine
                                   # to listen to, and ipykernel has no unencrypted-TCP warning to print
                                   config=Config({"KernelManager": {"transport": "ipc"}}),
                                   **(hooks if progress else {}))
    finally:
        if previous is None:
            os.environ.pop(STATIC_REPORT, None)
        else:
            os.environ[STATIC_REPORT] = previous
    return target


def mathjax_folder(out_dir: Path) -> str:
    """Copy MathJax 3 into ``out_dir/mathjax`` once; returns the URL the pages use, relative to
    ``out_dir``. The copy is MathJax's complete es5 build, fonts included, from the
    django-static-mathjax wheel (plain files, no Django needed). jupyter_server_mathjax, used
    before, ships a MathJax 2 cut down for Jupyter's own configuration: it lacks the TeX fonts
    MathJax 2 asks for by default, and accents such as \\hat g were drawn without them."""
    import mathjax

    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dst = out_dir / "mathjax"
    if not (dst / "tex-chtml-full.js").exists():
        shutil.rmtree(dst, ignore_errors=True)  # an older copy (MathJax 2) goes entirely
        shutil.copytree(src, dst)
    return "mathjax/tex-chtml-full.js"


def title(nb) -> str | None:
    """The notebook's first heading, for the page's <title>."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", cell.source, flags=re.MULTILINE)
            if m:
                return m.group(1)
    return None


def to_html(executed: Path, out_dir: Path) -> Path:
    """Render an executed notebook to ``out_dir/<name>.html``: local MathJax, the first heading
    as title, and no request to any CDN."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("widgets", None)  # the widget state only feeds the CDN widget manager
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                out.data = {"text/plain": WIDGET_NOTE}  # not the widget's repr, VBox(children=(…
    nb.metadata["title"] = title(nb) or executed.stem
    exporter = HTMLExporter(template_name="lab", template_file="kfrtrl_report.html.j2",
                            extra_loaders=[jinja2.DictLoader({"kfrtrl_report.html.j2": TEMPLATE})],
                            mathjax_url=mathjax_folder(out_dir))
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": executed.stem}})
    target = out_dir / (executed.stem + ".html")
    target.write_text(body, encoding="utf-8")
    return target


# The committed form of a notebook (what strip() leaves): JupyterLab, papermill and nbval add
# the rest (language_info details, widget state, execution timings, scroll state, outputs).
# A solution cell keeps {"jupyter": {"source_hidden": true}}: JupyterLab shows it folded.
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
CELL_METADATA = {"tags"}
HIDDEN_SOURCE = {"source_hidden": True}


def strip(nb) -> list[str]:
    """Reduce ``nb`` in place to its committed form: no outputs or execution counts, notebook
    metadata only the kernelspec above and the language's name, cell metadata only tags.
    Returns what was removed, one line naming the cell or key each (empty: it was clean)."""
    removed = []
    for key in sorted(set(nb.metadata) - {"kernelspec", "language_info"}):
        removed.append(f"notebook metadata {key!r}")
        del nb.metadata[key]
    if nb.metadata.get("kernelspec") != KERNELSPEC:
        removed.append(f"notebook metadata 'kernelspec' = {nb.metadata.get('kernelspec')}")
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
    if nb.metadata.get("language_info") != {"name": "python"}:
        removed.append(f"notebook metadata 'language_info' = {nb.metadata.get('language_info')}")
        nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        where = f"cell {i} (id {cell.get('id', '?')}, {cell.source.strip()[:30]!r})"
        for key in sorted(set(cell.metadata) - CELL_METADATA):
            if key == "jupyter" and "solution" in cell.metadata.get("tags", []) and cell.metadata[key] == HIDDEN_SOURCE:
                continue
            removed.append(f"{where}: metadata {key!r}")
            del cell.metadata[key]
        if "tags" in cell.metadata and not cell.metadata["tags"]:
            removed.append(f"{where}: metadata 'tags' (empty)")
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            if cell.outputs:
                removed.append(f"{where}: outputs")
                cell.outputs = []
            if cell.execution_count is not None:
                removed.append(f"{where}: execution_count")
                cell.execution_count = None
    return removed


def strip_files(paths) -> int:
    """Rewrite each notebook that is not in its committed form; returns how many were."""
    import nbformat

    dirty = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        removed = strip(nb)
        if removed:
            dirty += 1
            nbformat.write(nb, path)
            print(f"{path.name}: stripped " + "; ".join(removed))
    return dirty


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="quick")
    p.add_argument("--out", default=str(ROOT / "reports"))
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run (e.g. 01 03)")
    p.add_argument("--strip", action="store_true", help="put notebooks/*.ipynb back in their committed form")
    p.add_argument("--no-site", action="store_true", help="skip the course site (OUT/site)")
    args = p.parse_args(argv)
    chosen = [nb for nb in notebooks() if not args.only or any(nb.name.startswith(o) for o in args.only)]
    if args.strip:
        print(f"{strip_files(chosen)} of {len(chosen)} notebooks needed stripping")
        return 0
    # the kernels import this checkout's package, whichever copy of it is installed
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    out = Path(args.out)
    start = time.perf_counter()
    for i, nb in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {nb.name} ({args.profile})", flush=True)
        t0 = time.perf_counter()
        html = to_html(execute(nb, out, profile=args.profile, progress=lambda s: print(s, flush=True)), out)
        print(f"  -> {html} ({html.stat().st_size / MB:.1f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"{len(chosen)} notebooks in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.no_site:
        from .site import build

        # from every executed notebook in OUT: with --only, the others' earlier runs stay in the site
        print(f"course site from {out}/NN_*.ipynb", flush=True)
        build(out, progress=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
