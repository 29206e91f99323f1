"""The reports as a reader sees them: each page opened in headless Chromium with the network off.

``python -m kfrtrl_lab.notebook.browser reports/`` loads every ``reports/*.html`` from disk and
fails (exit 1, one line per problem) on: a request for anything outside the page's own folder,
a file that does not load (a missing font, say), a console error or uncaught exception, a MathJax
error, TeX left untypeset or a font that failed, a page file over 6 MB, and a plotly figure that
is not drawn, is cut off or has a visible trace with no point on screen; the sliders and buttons
of the explorers' precomputed figures are moved and must change their figure. It saves a
full-page screenshot beside each page (``reports/<name>.png``).

Then, when ``reports/site/`` is there (the course site, :mod:`.site`), every page of the site the
same way (requests may reach anything inside the site's folder), and besides: every link of the
sidebar and of the previous/next buttons leads to a file of the site; every slider of a
precomputed explorer is dragged to its far end (each button clicked) and the figure must change
and still draw every visible trace; and the search page finds the course's key word. Its
screenshots go beside the site, into ``reports/site-screenshots/``, not into what is published.
Last, every page of the site once more as a local web server serves it (``python -m http.server``).

The browser is Debian's Chromium (``apt-get install chromium``; ``KFRTRL_CHROMIUM`` names another
binary), driven by Playwright, which runs its own copy of node and needs no browser download.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

MAX_MB = 6.0
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# Every plotly figure of the page: drawn or not, and its visible traces with no point on screen.
# Plotly binds each trace's SVG group to its calcdata, whose [0].trace is
# the trace; a trace counts as drawn when a shape in such a group (outside the legend) has an
# extent. Traces are taken from the figure's input: plotly hides an empty one from its _fullData.
FIGURES = """() => [...document.querySelectorAll('.plotly-graph-div')].map(gd => {
    if (!gd._fullLayout) return {title: gd.id, drawn: false, empty: []};
    const drawn = new Set();
    for (const g of gd.querySelectorAll('.main-svg g')) {
      const trace = !g.closest('.legend') && Array.isArray(g.__data__) && g.__data__[0] && g.__data__[0].trace;
      const shapes = trace ? [...g.querySelectorAll('path, image, text, rect')] : [];
      if (shapes.some(s => { const b = s.getBBox(); return b.width > 0 || b.height > 0; }))
        drawn.add(trace.index);
    }
    const shown = gd.data.map((t, i) => [t, i]).filter(([t]) => t.visible === undefined || t.visible === true);
    const title = gd.layout.title && (gd.layout.title.text || gd.layout.title);
    return {title: title || gd.id, drawn: true, wider: gd._fullLayout.width > gd.clientWidth + 2,
            traces: shown.length, empty: shown.filter(([t, i]) => !drawn.has(i)).map(([t, i]) => t.name || 'trace ' + i),
            controls: ((gd.layout.sliders || []).length) + ((gd.layout.updatemenus || []).length)};
  })"""

# Runs in the page once it has loaded: waits for MathJax and the fonts, then reports what a
# reader would see wrong. TeX left untypeset is looked for in the prose (nbconvert's markdown
# cells, the site's article) outside code, outputs and typeset formulas.
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  await document.fonts.ready;
  const raw = [];
  const skip = 'code, pre, script, style, mjx-container, .highlight, .cell_output, .plotly-graph-div';
  for (const root of document.querySelectorAll('.jp-MarkdownOutput, .bd-article')) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT,
      {acceptNode: n => n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      // a whole $…$, or a lone $ that a parser left behind when it split a formula
      const m = n.textContent.match(/\\$(?:[^$\\n]+\\$)?/);
      if (m) raw.push(m[0]);
    }
  }
  const figures = (""" + FIGURES + """)();
  return {
    formulas: document.querySelectorAll('mjx-container').length,
    mathErrors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
    rawTex: raw,
    fontErrors: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
    figures,
  };
}"""


HOW_TO_GET = ("install Debian's Chromium (as root: apt-get install -y chromium; `make test` does it when run as "
              "root) or set KFRTRL_CHROMIUM to a Chromium binary")


def find_chromium() -> str | None:
    return os.environ.get("KFRTRL_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def chromium() -> str:
    """The Chromium binary, or exit saying how to get one."""
    path = find_chromium()
    if not path:
        sys.exit(f"no Chromium found: {HOW_TO_GET}")
    return path


def skip_without_chromium(what: str) -> bool:
    """True (after saying so) when no Chromium is here and none could have been installed (not root):
    the check is skipped rather than failed, unless KFRTRL_REQUIRE_BROWSER=1."""
    if find_chromium() or os.environ.get("KFRTRL_REQUIRE_BROWSER") == "1" or os.geteuid() == 0:
        return False
    print(f"SKIPPED {what}: no Chromium here and not root to install it; {HOW_TO_GET}", flush=True)
    return True


def launch(playwright, offline: bool = False):
    """Headless Chromium with a fresh profile (Playwright makes one per launch) and nothing
    running in the background that would reach for the network; ``offline``: no host name
    resolves either (IP addresses such as 127.0.0.1 still work)."""
    args = FLAGS + (["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"] if offline else [])
    return playwright.chromium.launch(executable_path=chromium(), headless=True, args=args)


def inside(url: str, folder: Path) -> bool:
    """Whether ``url`` is inline (data:, blob:) or a file in ``folder``."""
    if url.startswith(("data:", "blob:")):
        return True
    parsed = urlparse(url)
    return parsed.scheme == "file" and Path(unquote(parsed.path)).resolve().is_relative_to(folder.resolve())


def check_page(browser, page_path: Path, max_mb: float = MAX_MB, screenshot: bool | Path = True,
               root: Path | None = None, interact=None, served: str | None = None) -> tuple[list[str], dict]:
    """Load one page with the network off; returns (problems, what was seen). Requests may reach
    files in ``root`` (default: the page's folder). ``screenshot``: True for ``<page>.png`` beside
    the page, or the path to save it to. ``interact(page, problems, seen)``, when given, runs once
    the page is inspected (the site's checks of controls and links). ``served``: the URL at which
    a local web server serves ``root``; the page is loaded from there instead of from disk, and
    requests may reach that server only."""
    folder = root or page_path.parent
    problems = []
    size = page_path.stat().st_size / 1024 / 1024
    if size > max_mb:
        problems.append(f"page is {size:.1f} MB (limit {max_mb:g} MB)")
    # served from 127.0.0.1: "offline" would cut the local server off too; the route below still
    # lets nothing else through
    context = browser.new_context(offline=served is None, viewport={"width": 1280, "height": 900})

    def request(route):  # every request, file:// ones included, passes here
        url = route.request.url
        if url.startswith((served, "data:", "blob:")) if served else inside(url, folder):
            return route.continue_()
        problems.append(f"request outside the page's folder: {route.request.url[:160]}")
        route.abort()

    context.route("**/*", request)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text[:300]}"))
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {str(e)[:300]}"))
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url[:160]} ({r.failure})"))
    try:
        url = served + page_path.relative_to(folder).as_posix() if served else page_path.resolve().as_uri()
        page.goto(url, wait_until="load", timeout=60_000)
        seen = page.evaluate(INSPECT)
        if interact is not None:
            interact(page, problems, seen)
        page.wait_for_timeout(200)  # let late console messages arrive
        if screenshot:
            shot = page_path.with_suffix(".png") if screenshot is True else Path(screenshot)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()
    problems += [f"MathJax error: {e}" for e in seen["mathErrors"]]
    problems += [f"TeX left untypeset: {t}" for t in seen["rawTex"]]
    problems += [f"font failed to load: {f}" for f in seen["fontErrors"]]
    problems += figure_problems(seen["figures"])
    seen["mb"] = size
    return list(dict.fromkeys(problems)), seen


def figure_problems(figures: list[dict], when: str = "") -> list[str]:
    problems = []
    for fig in figures:
        if not fig["drawn"]:
            problems.append(f"figure {fig['title']!r}{when} was not drawn")
        elif fig.get("wider"):
            problems.append(f"figure {fig['title']!r}{when} is wider than its place on the page (cut off)")
        elif fig["empty"]:
            problems.append(f"figure {fig['title']!r}{when}: no points drawn for {', '.join(map(repr, fig['empty']))}")
    return problems


def check_folder(folder: Path, max_mb: float = MAX_MB, screenshot: bool = True) -> dict[str, list[str]]:
    """Check every ``*.html`` in ``folder``, printing a line per page; returns the problems by page."""
    from playwright.sync_api import sync_playwright

    pages = sorted(folder.glob("*.html"))
    results = {}
    with sync_playwright() as p:
        browser = launch(p)
        for page_path in pages:
            start = time.perf_counter()
            # the explorers' precomputed sliders work in these pages too
            problems, seen = check_page(browser, page_path, max_mb, screenshot,
                                        interact=lambda page, problems, seen: seen.update(moved=move_controls(page, problems)))
            results[page_path.name] = problems
            print(f"{'FAIL' if problems else 'ok  '} {page_path.name}: {seen['mb']:.1f} MB, "
                  f"{len(seen['figures'])} figures, {seen['moved']} controls moved, {seen['formulas']} formulas, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for problem in problems:
                print(f"     {problem}", flush=True)
        browser.close()
    return results


# -- the course site ------------------------------------------------------------------------------

# Each figure's precomputed controls (plotly sliders and button menus) and its state: which traces
# are visible and the title, which change when a control moves.
CONTROLS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(gd => ({
  title: String((gd.layout.title && (gd.layout.title.text || gd.layout.title)) || gd.id),
  sliders: (gd.layout.sliders || []).map(s => ({steps: s.steps.length, active: s.active || 0,
                                                 label: (s.currentvalue && s.currentvalue.prefix) || ''})),
  menus: (gd.layout.updatemenus || []).map(m => ({labels: m.buttons.map(b => b.label), active: m.active || 0})),
  state: JSON.stringify([gd.data.map(t => t.visible), gd.layout.title]),
}))"""

# The screen boxes of slider ``i`` of figure ``f``: its grip and its rail (plotly binds each
# slider's group to its options, whose _index is the slider's place in layout.sliders).
SLIDER_BOXES = """([f, i]) => {
  const gd = document.querySelectorAll('.plotly-graph-div')[f];
  const group = [...gd.querySelectorAll('g.slider-group')].find(g => g.__data__ && g.__data__._index === i);
  if (!group) return null;
  group.scrollIntoView({block: 'center'});
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; };
  return {grip: box(group.querySelector('rect.slider-grip-rect')), rail: box(group.querySelector('rect.slider-rail-rect'))};
}"""

# The screen box of the button labelled ``label`` in figure ``f``.
BUTTON_BOX = """([f, label]) => {
  const gd = document.querySelectorAll('.plotly-graph-div')[f];
  const button = [...gd.querySelectorAll('g.updatemenu-button')].find(b => b.textContent.trim() === label);
  if (!button) return null;
  button.scrollIntoView({block: 'center'});
  const r = button.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height};
}"""

# Links a reader follows to get around: the sidebar, the previous/next buttons, the header.
NAV_LINKS = """() => [...document.querySelectorAll('.bd-sidebar-primary a[href], .prev-next-area a[href], .bd-header a[href]')]
  .map(a => a.href).filter(h => !h.startsWith('javascript:'))"""


def _changed(page, f: int, before: str, timeout_ms: int = 3000) -> bool:
    """Whether figure ``f``'s state differs from ``before`` within ``timeout_ms``."""
    for _ in range(timeout_ms // 100):
        if page.evaluate(CONTROLS)[f]["state"] != before:
            return True
        page.wait_for_timeout(100)
    return False


def move_controls(page, problems: list[str]) -> int:
    """Drag every slider of every precomputed figure to its far end (its start, if it starts at
    the end) and click one button of every menu other than the active one; each move must change
    what the figure shows. Returns how many controls were moved."""
    moved = 0
    for f, fig in enumerate(page.evaluate(CONTROLS)):
        for i, slider in enumerate(fig["sliders"]):
            boxes = page.evaluate(SLIDER_BOXES, [f, i])
            if boxes is None:
                problems.append(f"figure {fig['title']!r}: slider {slider['label']!r} is not on the page")
                continue
            grip, rail = boxes["grip"], boxes["rail"]
            to_start = slider["active"] == slider["steps"] - 1
            target_x = rail["x"] + 2 if to_start else rail["x"] + rail["width"] - 2
            before = page.evaluate(CONTROLS)[f]["state"]
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            page.mouse.move(target_x, grip["y"] + grip["height"] / 2, steps=12)
            page.mouse.up()
            moved += 1
            if not _changed(page, f, before):
                problems.append(f"figure {fig['title']!r}: dragging slider {slider['label']!r} changed nothing")
        for menu in fig["menus"]:
            label = next(lab for k, lab in enumerate(menu["labels"]) if k != menu["active"])
            box = page.evaluate(BUTTON_BOX, [f, label])
            if box is None:
                problems.append(f"figure {fig['title']!r}: button {label!r} is not on the page")
                continue
            before = page.evaluate(CONTROLS)[f]["state"]
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            moved += 1
            if not _changed(page, f, before):
                problems.append(f"figure {fig['title']!r}: clicking {label!r} changed nothing")
    if moved:
        problems += figure_problems(page.evaluate(FIGURES), when=" (after moving its controls)")
    return moved


def site_interactions(site: Path):
    """What check_page does on a page of the site once it has loaded: the links of its navigation
    lead to files of the site, and its precomputed controls move their figures."""

    def interact(page, problems, seen):
        for href in dict.fromkeys(page.evaluate(NAV_LINKS)):
            parsed = urlparse(href)
            target = Path(unquote(parsed.path))
            if parsed.scheme != "file" or not target.resolve().is_relative_to(site.resolve()):
                problems.append(f"navigation link leaves the site: {href[:160]}")
            elif not target.is_file():
                problems.append(f"navigation link to a missing page: {href[:160]}")
        seen["moved"] = move_controls(page, problems)

    return interact


def serve(folder: Path):
    """A web server for ``folder`` on 127.0.0.1 (a free port), as ``python -m http.server`` would
    serve it, in a background thread; returns it (``server.shutdown()`` stops it)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # one line per request would bury the check's own lines
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_search(browser, site: Path, word: str = "Kronecker") -> list[str]:
    """The site's search page, opened from disk with ``?q=word``, must list at least one page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(offline=True)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(f"search: uncaught exception: {str(e)[:300]}"))
    try:
        page.goto((site / "search.html").resolve().as_uri() + f"?q={word}", wait_until="load", timeout=60_000)
        try:
            page.wait_for_function("document.querySelectorAll('#search-results li').length > 0", timeout=20_000)
        except PlaywrightTimeout:  # no result came
            problems.append(f"search: no result for {word!r}")
    finally:
        context.close()
    return problems


def check_site(site: Path, max_mb: float = MAX_MB, screenshots: Path | None = None) -> dict[str, list[str]]:
    """Check every page of the course site (see the module's docstring), printing a line per page;
    screenshots into ``screenshots`` (None: none). Returns the problems by page."""
    from playwright.sync_api import sync_playwright

    pages = sorted(site.glob("*.html"))
    if not (site / "index.html").exists():
        sys.exit(f"no index.html in {site}")
    results = {}
    with sync_playwright() as p:
        browser = launch(p)
        for page_path in pages:
            start = time.perf_counter()
            shot = screenshots / f"{page_path.stem}.png" if screenshots else False
            problems, seen = check_page(browser, page_path, max_mb, shot, root=site, interact=site_interactions(site))
            results[f"site/{page_path.name}"] = problems
            print(f"{'FAIL' if problems else 'ok  '} site/{page_path.name}: {seen['mb']:.2f} MB, "
                  f"{len(seen['figures'])} figures, {seen.get('moved', 0)} controls moved, {seen['formulas']} formulas, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for problem in problems:
                print(f"     {problem}", flush=True)
        results["site/search"] = check_search(browser, site)
        print(f"{'FAIL' if results['site/search'] else 'ok  '} site/search.html?q=Kronecker", flush=True)
        for problem in results["site/search"]:
            print(f"     {problem}", flush=True)
        # the same pages as `python -m http.server -d reports/site` serves them
        server = serve(site)
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}/"
            for page_path in pages:
                problems, seen = check_page(browser, page_path, max_mb, False, root=site, served=base)
                results[f"served {page_path.name}"] = problems
                print(f"{'FAIL' if problems else 'ok  '} {base}{page_path.name}: {len(seen['figures'])} figures, "
                      f"{seen['formulas']} formulas", flush=True)
                for problem in problems:
                    print(f"     {problem}", flush=True)
        finally:
            server.shutdown()
        browser.close()
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="reports")
    p.add_argument("--max-mb", type=float, default=MAX_MB)
    p.add_argument("--no-screenshots", action="store_true")
    args = p.parse_args(argv)
    if skip_without_chromium("browser check"):
        return 0
    folder = Path(args.folder)
    results = check_folder(folder, args.max_mb, not args.no_screenshots) if list(folder.glob("*.html")) else {}
    if (folder / "site" / "index.html").exists():
        results |= check_site(folder / "site", args.max_mb, None if args.no_screenshots else folder / "site-screenshots")
    if not results:
        sys.exit(f"no *.html and no site/index.html in {folder}")
    bad = [name for name, problems in results.items() if problems]
    print(f"{len(results) - len(bad)} of {len(results)} pages clean" + (f"; failed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
