"""The course site: one offline, navigable website built from the executed notebooks.

``python -m kfrtrl_lab.notebook.site reports`` turns ``reports/NN_*.ipynb`` (executed by
:mod:`.reports`; nothing is run again) into ``reports/site/``: a home page with the roadmap (each
lesson's question, prerequisites and time), one page per lesson, the notation page
(``docs/notation.md``) and the equations (``docs/algorithms.md``), a
bibliography, a sidebar, previous/next links and search. It is a plain Sphinx build (the Jupyter Book 1 stack: myst-nb with execution off,
sphinx-book-theme, sphinx-exercise, sphinx-proof, sphinxcontrib-bibtex), so it needs no network:
MathJax 3 and plotly.js are files of the site (plotly.js once, in ``_static/``, loaded by the pages
that draw figures), and the site opens from ``file://`` or any static web server.

Each lesson goes through :func:`lesson_copy` first, which renders the course's cell conventions:
a markdown cell tagged ``objectives`` (``takeaways``) becomes a box at the start (end) of the
lesson; an exercise (a statement, a code cell tagged ``exercise``, one or more cells tagged
``solution``, a cell tagged ``check``) becomes a numbered exercise whose solution is a collapsed
dropdown; plotly outputs become a div and a ``Plotly.newPlot`` call instead of a page-sized copy
of plotly.js each; widget views (nothing to talk to without a kernel) are dropped, the explorers'
precomputed figures (``widgets.Explorer.static_figure``) stay.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .reports import MB, ROOT, mathjax_folder, notebooks, title

#: The roadmap: the question each lesson answers, what to read first, and about how long it takes
#: (reading, and running the quick profile on a laptop).
LESSONS = {
    "01": dict(question="What does RTRL carry forward in time, is its gradient exactly BPTT's, and what does "
                        "that cost?",
               before="backpropagation through time; Jacobians and the chain rule", minutes=30),
    "02": dict(question="Why can KF-RTRL keep the influence matrix as one Kronecker product, and how does it "
                        "merge two products into one without bias?",
               before="lesson 1; the Kronecker product", minutes=45),
    "03": dict(question="How noisy are UORO's and KF-RTRL's gradient estimates, and how does the noise grow "
                        "with the network size n and the sequence length T?",
               before="lessons 1–2; variance of an unbiased estimator", minutes=40),
    "04": dict(question="How long a dependency can each learning rule pick up when it trains online "
                        "(the copy task)?",
               before="lesson 3", minutes=40),
    "05": dict(question="How well does each estimator train a character-level language model "
                        "(bits per character on Penn Treebank)?",
               before="lesson 4", minutes=40),
    "06": dict(question="What does each method cost per step in time and memory, and how does that scale "
                        "with n?",
               before="lessons 1–3", minutes=30),
    "07": dict(question="What do OK-r, KF-AVG-k and SnAp-1 buy over KF-RTRL, and at what price?",
               before="lessons 2, 3 and 6", minutes=50),
    "08": dict(question="When is exact RTRL cheap (diagonal recurrences, the LRU), what does learning a stack "
                        "layer by layer cost in bias, and who reaches longer copy sequences per CPU second?",
               before="lessons 1, 4 and 7", minutes=60),
}

#: The papers the course draws on, and what each lesson takes from them.
PAPERS = {
    "williams1989": dict(
        bibtex="""@article{williams1989,
  author = {Williams, Ronald J. and Zipser, David},
  title = {A Learning Algorithm for Continually Running Fully Recurrent Neural Networks},
  journal = {Neural Computation}, volume = {1}, number = {2}, pages = {270--280}, year = {1989},
  doi = {10.1162/neco.1989.1.2.270}}""",
        lessons={"01": "the RTRL recursion for the influence matrix and its cost",
                 "06": "the exact-RTRL baseline of the cost comparison"}),
    "tallec2018": dict(
        bibtex="""@inproceedings{tallec2018,
  author = {Tallec, Corentin and Ollivier, Yann},
  title = {Unbiased Online Recurrent Optimization},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2018},
  eprint = {1702.05043}, archiveprefix = {arXiv}}""",
        lessons={"03": "UORO, the rank-one estimator KF-RTRL is compared with",
                 "04": "UORO's training runs on the copy task", "05": "UORO on character-level PTB",
                 "06": "UORO's cost per step"}),
    "mujika2018": dict(
        bibtex="""@inproceedings{mujika2018,
  author = {Mujika, Asier and Meier, Florian and Steger, Angelika},
  title = {Approximating Real-Time Recurrent Learning with Random {K}ronecker Factors},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)}, volume = {31}, year = {2018},
  eprint = {1805.10842}, archiveprefix = {arXiv}}""",
        lessons={"02": "the Kronecker factorisation, the unbiased merge and the best scaling p",
                 "03": "the variance claims (smaller than UORO's, bounded in T, flat in n)",
                 "04": "the copy task and its curriculum", "05": "the character-level PTB benchmark with an RHN",
                 "06": "KF-RTRL's cost, O(n^3) per step"}),
    "benzing2019": dict(
        bibtex="""@inproceedings{benzing2019,
  author = {Benzing, Frederik and Gauy, Marcelo Matheus and Mujika, Asier and Martinsson, Anders
            and Steger, Angelika},
  title = {Optimal {K}ronecker-Sum Approximation of Real Time Recurrent Learning},
  booktitle = {Proceedings of the 36th International Conference on Machine Learning (ICML)},
  series = {PMLR}, volume = {97}, pages = {604--613}, year = {2019},
  eprint = {1902.03993}, archiveprefix = {arXiv}}""",
        lessons={"04": "the OK-r and KF-AVG runs and their published copy-task numbers",
                 "05": "the published PTB numbers for OK and KF-RTRL",
                 "07": "OK-r: the minimum-variance unbiased rank-r sum via an SVD, and KF-AVG-k"}),
    "menick2021": dict(
        bibtex="""@inproceedings{menick2021,
  author = {Menick, Jacob and Elsen, Erich and Evci, Utku and Osindero, Simon and Simonyan, Karen
            and Graves, Alex},
  title = {Practical Real Time Recurrent Learning with a Sparse Approximation},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2021},
  eprint = {2006.07232}, archiveprefix = {arXiv}}""",
        lessons={"06": "SnAp-1's cost per step", "07": "SnAp-1: no noise, but a bias",
                 "08": "SnAp-1 is exact when the state Jacobian is diagonal"}),
    "zucchet2023": dict(
        bibtex="""@inproceedings{zucchet2023,
  author = {Zucchet, Nicolas and Meier, Robert and Schug, Simon and Mujika, Asier and Sacramento, Jo{\\~a}o},
  title = {Online Learning of Long-Range Dependencies},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)}, volume = {36}, year = {2023},
  eprint = {2305.15947}, archiveprefix = {arXiv}}""",
        lessons={"07": "further reading, taken up in lesson 8: exact online learning made cheap by diagonal linear recurrent units",
                 "08": "exact RTRL of a diagonal layer by its traces, and layer-wise online learning of LRU stacks "
                       "(what it drops, and its bias)"}),
    "orvieto2023": dict(
        bibtex="""@inproceedings{orvieto2023,
  author = {Orvieto, Antonio and Smith, Samuel L. and Gu, Albert and Fernando, Anushan and Gulcehre, Caglar
            and Pascanu, Razvan and De, Soham},
  title = {Resurrecting Recurrent Neural Networks for Long Sequences},
  booktitle = {Proceedings of the 40th International Conference on Machine Learning (ICML)},
  series = {PMLR}, volume = {202}, pages = {26670--26698}, year = {2023},
  eprint = {2303.06349}, archiveprefix = {arXiv}}""",
        lessons={"07": "further reading, taken up in lesson 8: the linear recurrent unit (LRU) that makes exact RTRL affordable",
                 "08": "the LRU layer: λ = exp(−exp ν + i exp θ), γ = sqrt(1 − |λ|²), the ring initialisation, "
                       "and its stacks"}),
}

# Sphinx's configuration, written into the source folder (so `python -m sphinx` can rebuild from
# it by hand). The pages load plotly.js only where a figure is drawn (see setup()).
CONF = '''\
project = "kfrtrl_lab"
html_title = "KF-RTRL and its family"
author = "kfrtrl_lab"
# sphinx_togglebutton folds the solutions (sphinx-exercise's "dropdown" class) until clicked
extensions = ["myst_nb", "sphinx_exercise", "sphinx_proof", "sphinx_togglebutton", "sphinxcontrib.bibtex"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the notebooks were executed by papermill already: never run them again
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget manager from a CDN: a static page has no kernel for widgets
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_dmath_double_inline = True  # the lessons write $$…$$ inside paragraphs, as Jupyter renders them
myst_heading_anchors = 3
highlight_language = "none"  # a fenced block without a language is shown as written (pseudo-code)
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_theme_options = {"home_page_in_toc": True, "show_navbar_depth": 1, "show_toc_level": 2,
                      "use_download_button": False, "use_fullscreen_button": True}
html_static_path = ["_static"]
html_copy_source = False  # the lessons' sources would only double the site's size
html_show_sourcelink = False
html_last_updated_fmt = None
html_context = {"default_mode": "light"}  # the theme's colour mode, stated (unset, it logs an error)
# the search page lists the pages only: fetching each page for a summary fails from file://
html_show_search_summary = False

# MathJax 3 from the site itself (_static/mathjax), configured like the reports' pages: AMS
# numbering, and an undefined macro is an error (which the browser check reports)
mathjax_path = "mathjax/tex-chtml-full.js"
mathjax3_config = {"tex": {"tags": "ams", "packages": {"[-]": ["noundefined"]}}}

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

proof_uppercase_first = True


def add_plotly_where_drawn(app, pagename, templatename, context, doctree):
    """plotly.js, one shared file, on the pages that draw a figure (before their inline calls)."""
    if "Plotly.newPlot" in context.get("body", ""):
        app.add_js_file("plotly.min.js", priority=100)


def setup(app):
    app.connect("html-page-context", add_plotly_where_drawn)
'''


# -- a lesson as the site shows it ---------------------------------------------------------------

def _fenced(directive: str, body: str = "", options: dict | None = None, argument: str = "") -> str:
    """A MyST directive block, its fence longer than any backtick run in ``body``."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    lines = [f"{fence}{{{directive}}}" + (f" {argument}" if argument else "")]
    lines += [f":{key}: {value}" for key, value in (options or {}).items()]
    return "\n".join(lines + ([body] if body else []) + [fence])


def _split_headings(source: str) -> tuple[list[tuple[int, str]], str]:
    """``source``'s leading headings as (level, text), and the rest with any later heading turned
    into a bold line: a heading cannot sit inside a directive (a box, an exercise, a dropdown).
    Lines in fenced code blocks are left alone."""
    leading, body, fence = [], [], None
    for line in source.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line) if fence is None else None
        if heading and not any(b.strip() for b in body):
            leading.append((len(heading.group(1)), heading.group(2)))
        elif heading:
            body.append(f"**{heading.group(2)}**")
        else:
            body.append(line)
    return leading, "\n".join(body).strip("\n")


def _headings(leading: list[tuple[int, str]]) -> str:
    return "\n\n".join("#" * level + " " + text for level, text in leading)


def plotly_html(figure: dict, div_id: str) -> str:
    """A div and the ``Plotly.newPlot`` call that draws ``figure`` (plotly's JSON: data, layout,
    and frames if any) into it with the site's shared plotly.js."""
    layout = figure.get("layout", {})
    height = layout.get("height") or 480

    def js(value):  # JSON inside <script>: "</" would end the script early
        return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")

    draw = f'Plotly.newPlot(gd, {js(figure.get("data", []))}, {js(layout)}, {{"responsive": true}})'
    if figure.get("frames"):
        draw += f'.then(function () {{ return Plotly.addFrames(gd, {js(figure["frames"])}); }})'
    # drawn once the page is laid out (sized earlier, plotly takes a width the theme then narrows),
    # and resized with its column (the sidebars open and close without a window resize)
    return (f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>\n'
            f'<script>(function () {{ var gd = document.getElementById("{div_id}"); function draw() {{ {draw}; '
            f"new ResizeObserver(function () {{ if (gd._fullLayout) Plotly.Plots.resize(gd); }}).observe(gd); }} "
            f'if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); '
            f"else draw(); }})();</script>")


def _sources_cell(key: str):
    """A closing markdown cell: the papers this lesson draws on, and what it takes from each."""
    import nbformat

    lines = [f"- {what[0].upper() + what[1:]}: {{cite:t}}`{name}`."
             for name, paper in PAPERS.items() for lesson, what in paper["lessons"].items() if lesson == key]
    if not lines:
        return None
    return nbformat.v4.new_markdown_cell("## Sources\n\n" + "\n".join(lines) + "\n\nAll of them: [the bibliography]"
                                         "(bibliography.md).")


def site_links(source: str, pages: set[str]) -> str:
    """Markdown links from a notebook or a doc to ``../docs/X.md`` or ``../notebooks/X.ipynb``,
    made links to the site's own page X when the site has one (every page sits at the site's root)."""
    def local(match):
        target, anchor = match.group(2), match.group(3) or ""
        stem = Path(target).stem
        return f"]({stem}{Path(target).suffix}{anchor})" if stem in pages else match.group(0)

    return re.sub(r"\]\((\.\./(?:docs|notebooks)/)?([\w.-]+\.(?:md|ipynb))(#[^)\s]*)?\)", local, source)


def lesson_copy(nb, name: str, pages: set[str] = frozenset()):
    """A copy of the executed notebook ``nb`` (file stem ``name``) ready for the site: the course's
    cell conventions rendered with sphinx-exercise and admonitions, plotly outputs drawn with the
    shared plotly.js, widget views dropped, links to the site's ``pages`` (their stems: docs and
    lessons) made local, and the lesson's sources appended. Returns
    ``(copy, notes)``: notes say what was not as expected (a solution with no exercise before it)."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # the widget state only feeds a widget manager from a CDN
    key = name[:2]
    cells, notes = [], []
    exercise = None  # the label of the latest exercise: the solutions that follow are its own
    exercises = figure_count = 0

    def md(source):
        return nbformat.v4.new_markdown_cell(source)

    def boxed(cell, build):
        """``cell``'s leading headings (section titles) before the box that ``build(title, body)``
        writes; the title is the first heading below level 1, if any (a level-1 heading is the
        page's title and stays outside)."""
        leading, body = _split_headings(cell.source)
        outside = [h for h in leading if h[0] == 1]
        inner = [h for h in leading if h[0] > 1]
        if outside:
            cells.append(md(_headings(outside)))
        cell.source = build(inner[0][1] if inner else None, body)
        cells.append(cell)

    def open_exercise():
        nonlocal exercises
        exercises += 1
        return f"{name}-exercise-{exercises}"

    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = site_links(cell.source, pages)
        tags = set(cell.metadata.get("tags", []))
        nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        next_tags = set(nxt.metadata.get("tags", [])) if nxt is not None else set()
        if cell.cell_type == "code":
            outputs = []
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data:
                    continue  # a live control: nothing a static page can run
                if "application/vnd.plotly.v1+json" in data:
                    figure_count += 1
                    out.data = {"text/html": plotly_html(data["application/vnd.plotly.v1+json"],
                                                         f"{name}-figure-{figure_count}")}
                    out.metadata = {}
                elif "Plotly.newPlot" in data.get("text/html", ""):  # plotly's HTML alone: drawn as it is
                    notes.append(f"{name}: a plotly figure without its JSON (cell {i}) keeps its own HTML")
                outputs.append(out)
            cell.outputs = outputs
            if "injected-parameters" in tags:  # papermill's bookkeeping: the profile, folded
                cell.metadata.setdefault("tags", []).append("hide-input")

        # an exercise: the statement (the markdown cell just before the stub) and the stub; the
        # statement's leading headings stay sections of the lesson, before the exercise
        if cell.cell_type == "markdown" and "exercise" in next_tags and not tags & {"solution", "check"}:
            leading, body = _split_headings(cell.source)
            if leading:
                cells.append(md(_headings(leading)))
            exercise = open_exercise()
            # a heading ("### Exercise 2.1 — …") names the exercise already: no second number
            options = {"label": exercise, **({"nonumber": ""} if leading else {})}
            cells.append(md(_fenced("exercise-start", options=options)))
            cell.source = body
            cells.append(cell)
            continue
        if "exercise" in tags:
            if exercise is None:  # a stub with no statement before it still opens an exercise
                exercise = open_exercise()
                cells.append(md(_fenced("exercise-start", options={"label": exercise})))
            cells += [cell, md(_fenced("exercise-end"))]
            continue
        if "solution" in tags:
            previous_tags = set(nb.cells[i - 1].metadata.get("tags", [])) if i else set()
            if "solution" not in previous_tags:
                if exercise is None:
                    notes.append(f"{name}: a solution (cell {i}) with no exercise before it is shown open")
                else:
                    cells.append(md(_fenced("solution-start", argument=exercise, options={"class": "dropdown"})))
            if cell.cell_type == "markdown" and exercise is not None:  # inside the dropdown: no headings
                leading, body = _split_headings(cell.source)
                cell.source = "\n\n".join([f"**{text}**" for _, text in leading] + [body])
            cells.append(cell)
            if "solution" not in next_tags and exercise is not None:
                cells.append(md(_fenced("solution-end")))
            continue
        if cell.cell_type == "markdown" and tags & {"objectives", "takeaways"}:
            default = "What this lesson is for" if "objectives" in tags else "What to take away"
            kind = "tip" if "objectives" in tags else "important"
            boxed(cell, lambda title, body: _fenced("admonition", body, {"class": kind}, argument=title or default))
            continue
        cells.append(cell)

    sources = _sources_cell(key)
    if sources is not None:
        # after the takeaways, which close the lesson
        cells.append(sources)
    nb.cells = cells
    return nb, notes


# -- the pages around the lessons -------------------------------------------------------------------

def roadmap_row(nb, stem: str) -> dict:
    """The lesson's row of the roadmap: its question (from :data:`LESSONS`), and what to read
    first and how long it takes as the lesson's own objectives cell states them ("Prerequisites.
    …", "Time: …"), else as :data:`LESSONS` has them."""
    road = LESSONS.get(stem[:2], {})
    row = {"question": road.get("question", ""), "before": road.get("before", ""),
           "time": f"{road['minutes']} min" if road.get("minutes") else ""}
    objectives = next((c.source for c in nb.cells if "objectives" in c.metadata.get("tags", [])), "")
    for key, word in (("before", "Prerequisites"), ("time", "Time")):
        # a paragraph that opens with the word, bold or not, then ":" or "."
        found = re.search(rf"^\s*(?:\*\*)?{word}\s*[:.]?(?:\*\*)?\s*[:.]?\s*(.+?)\s*(?:\n\s*\n|\Z)", objectives,
                          flags=re.MULTILINE | re.DOTALL)
        if found:
            row[key] = " ".join(found.group(1).split()).rstrip(".")
    return row


def index_page(lessons: list[tuple[str, str]], roadmap: dict[str, dict], reference: list[str] = ("notation",)) -> str:
    """The home page: what the course is, the roadmap as a table (``roadmap``: stem -> its
    :func:`roadmap_row`), the table of contents."""
    rows = []
    for stem, heading in lessons:
        road = roadmap[stem]
        cells = [f"[{heading}]({stem}.ipynb)", road["question"], road["before"], road["time"]]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    toc = "\n".join(stem for stem, _ in lessons)
    reference = "\n".join(reference)
    return f"""# KF-RTRL and its family: a course in eight notebooks

Recurrent networks that learn **online** — one update per time step, no stored history — need the
influence of every parameter on the state, carried forward in time. Real-time recurrent learning
(RTRL) carries it exactly, at a price no large network can pay. These lessons build RTRL, then the
Kronecker-factored approximation KF-RTRL and its family (UORO, OK-r, KF-AVG-k, SnAp-1), measure how
noisy and how costly each is, train them on the papers' benchmarks, and end with the case where exact
RTRL is cheap: diagonal recurrences (the LRU) and their stacks learned layer by layer.

Every page here was produced by executing the notebooks (`make reports`); nothing on it needs a
network or a running kernel. The interactive explorers are precomputed: move their sliders in
the figure. To change the code and run it yourself, open `notebooks/` in JupyterLab.

## Roadmap

| Lesson | The question it answers | Before it | Time |
|---|---|---|---|
{chr(10).join(rows)}

The symbols are defined once on the [notation page](notation.md); the papers, and what each lesson
takes from them, are in the [bibliography](bibliography.md).

```{{toctree}}
:caption: Lessons
:maxdepth: 1
:hidden:

{toc}
```

```{{toctree}}
:caption: Reference
:maxdepth: 1
:hidden:

{reference}
bibliography
```
"""


def bibliography_page(lessons: list[tuple[str, str]]) -> str:
    """The papers, and per lesson what it takes from which."""
    rows = [f"| [{heading}]({stem}.ipynb) | {{cite:t}}`{name}` | {paper['lessons'][stem[:2]]} |"
            for stem, heading in lessons for name, paper in PAPERS.items() if stem[:2] in paper["lessons"]]
    return f"""# Bibliography

## What each lesson takes from the papers

| Lesson | Paper | What the lesson takes from it |
|---|---|---|
{chr(10).join(rows)}

## References

```{{bibliography}}
:all:
```
"""


#: the pages of docs/ the site carries (as they are, their links to other pages made local), in
#: the sidebar's order
DOCS = ("notation", "algorithms")

# -- the build ----------------------------------------------------------------------------------------

def sources(reports: Path, src: Path, docs: Path = ROOT / "docs") -> list[str]:
    """Write the Sphinx source folder ``src`` from the executed notebooks in ``reports``; returns
    the notes of :func:`lesson_copy`."""
    import nbformat

    for old in [*src.glob("[0-9][0-9]_*.ipynb"), *src.glob("*.md")]:
        old.unlink()
    src.mkdir(parents=True, exist_ok=True)
    static = src / "_static"
    static.mkdir(exist_ok=True)
    mathjax_folder(static)
    import plotly

    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")
    # the docs pages: the notation and the equations, which every lesson links to
    missing = [f"{name}.md" for name in DOCS if not (docs / f"{name}.md").exists()]
    if missing:
        raise FileNotFoundError(f"the course site carries {', '.join(missing)} from {docs}, which has no such file: "
                                f"build the site from a checkout of the repository")
    docs_pages = {name: (docs / f"{name}.md").read_text() for name in DOCS}
    pages = {executed.stem for executed in notebooks(reports)} | set(docs_pages)
    for name, text in docs_pages.items():
        (src / f"{name}.md").write_text(site_links(text, pages))
    lessons, roadmap, notes = [], {}, []
    for executed in notebooks(reports):
        nb = nbformat.read(executed, as_version=4)
        page, lesson_notes = lesson_copy(nb, executed.stem, pages)
        nbformat.write(page, src / executed.name)
        lessons.append((executed.stem, title(nb) or executed.stem))
        roadmap[executed.stem] = roadmap_row(nb, executed.stem)
        notes += lesson_notes
    (src / "conf.py").write_text(CONF)
    (src / "index.md").write_text(index_page(lessons, roadmap, [name for name in DOCS if name in docs_pages]))
    (src / "bibliography.md").write_text(bibliography_page(lessons))
    (src / "references.bib").write_text("\n\n".join(p["bibtex"] for p in PAPERS.values()) + "\n")
    return notes


def build(reports: Path, out: Path | None = None, progress=print, docs: Path = ROOT / "docs") -> Path:
    """Build the site from ``reports/NN_*.ipynb`` into ``out`` (default ``reports/site``), the Sphinx
    sources in ``reports/site-src``; returns the entry page. Sphinx runs in a child process (a
    fresh build each time, warnings printed, none fatal: a warning in a page being written elsewhere
    should not stop the reports)."""
    reports = Path(reports)
    out = Path(out) if out is not None else reports / "site"
    src = reports / "site-src"
    start = time.perf_counter()
    for note in sources(reports, src, docs):
        progress(f"  note: {note}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", "--keep-going", "-d", str(src / ".doctrees"),
           str(src), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    for line in warnings:
        progress(f"  sphinx: {line}")
    if result.returncode != 0 or not (out / "index.html").exists():
        raise RuntimeError(f"the site did not build (sphinx exit {result.returncode}); see the lines above")
    (out / ".nojekyll").touch()  # GitHub Pages would otherwise hide _static/
    pages = sorted(out.glob("*.html"))
    biggest = max(pages, key=lambda p: p.stat().st_size)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    progress(f"  -> {out / 'index.html'}: {len(pages)} pages, largest {biggest.name} "
             f"({biggest.stat().st_size / MB:.1f} MB), {total / MB:.0f} MB in all, {len(warnings)} warning lines, "
             f"in {time.perf_counter() - start:.1f} s")
    return out / "index.html"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="?", default=str(ROOT / "reports"), help="folder of executed NN_*.ipynb")
    p.add_argument("--out", help="where the site goes (default: REPORTS/site)")
    args = p.parse_args(argv)
    if not notebooks(Path(args.reports)):
        sys.exit(f"no executed NN_*.ipynb in {args.reports}: run `python -m kfrtrl_lab.notebook.reports` first")
    build(Path(args.reports), args.out and Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
