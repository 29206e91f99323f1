"""The reports as a reader sees them: each page opened in headless Chromium with the network off.

``python -m kfrtrl_lab.notebook.browser reports/`` loads every ``reports/*.html`` from disk and
fails (exit 1, one line per problem) on: a request for anything outside the page's own folder,
a file that does not load (a missing font, say), a console error or uncaught exception, a MathJax
error, TeX left untypeset or a font that failed, a page file over 6 MB, and a plotly figure that
is not drawn or has a visible trace with no point on screen. It saves a full-page screenshot
beside each page (``reports/<name>.png``).

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

# Runs in the page once it has loaded: waits for MathJax and the fonts, then reports what a
# reader would see wrong. Plotly binds each trace's SVG group to its calcdata, whose [0].trace is
# the trace; a trace counts as drawn when a shape in such a group (outside the legend) has an
# extent. Traces are taken from the figure's input: plotly hides an empty one from its _fullData.
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  await document.fonts.ready;
  const md = [...document.querySelectorAll('.jp-MarkdownOutput')];
  const raw = md.map(e => e.innerText.match(/\\$[^$\\n]+\\$/)).filter(Boolean).map(m => m[0]);
  const figures = [...document.querySelectorAll('.plotly-graph-div')].map(gd => {
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
    return {title: title || gd.id, drawn: true,
            traces: shown.length, empty: shown.filter(([t, i]) => !drawn.has(i)).map(([t, i]) => t.name || 'trace ' + i)};
  });
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


def check_page(browser, page_path: Path, max_mb: float = MAX_MB, screenshot: bool = True) -> tuple[list[str], dict]:
    """Load one page with the network off; returns (problems, what was seen)."""
    folder = page_path.parent
    problems = []
    size = page_path.stat().st_size / 1024 / 1024
    if size > max_mb:
        problems.append(f"page is {size:.1f} MB (limit {max_mb:g} MB)")
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})

    def request(route):  # every request, file:// ones included, passes here
        if inside(route.request.url, folder):
            return route.continue_()
        problems.append(f"request outside the page's folder: {route.request.url[:160]}")
        route.abort()

    context.route("**/*", request)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text[:300]}"))
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {str(e)[:300]}"))
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url[:160]} ({r.failure})"))
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=60_000)
        seen = page.evaluate(INSPECT)
        page.wait_for_timeout(200)  # let late console messages arrive
        if screenshot:
            page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)
    finally:
        context.close()
    problems += [f"MathJax error: {e}" for e in seen["mathErrors"]]
    problems += [f"TeX left untypeset: {t}" for t in seen["rawTex"]]
    problems += [f"font failed to load: {f}" for f in seen["fontErrors"]]
    for fig in seen["figures"]:
        if not fig["drawn"]:
            problems.append(f"figure {fig['title']!r} was not drawn")
        elif fig["empty"]:
            problems.append(f"figure {fig['title']!r}: no points drawn for {', '.join(map(repr, fig['empty']))}")
    seen["mb"] = size
    return list(dict.fromkeys(problems)), seen


def check_folder(folder: Path, max_mb: float = MAX_MB, screenshot: bool = True) -> dict[str, list[str]]:
    """Check every ``*.html`` in ``folder``, printing a line per page; returns the problems by page."""
    from playwright.sync_api import sync_playwright

    pages = sorted(folder.glob("*.html"))
    if not pages:
        sys.exit(f"no *.html in {folder}")
    results = {}
    with sync_playwright() as p:
        browser = launch(p)
        for page_path in pages:
            start = time.perf_counter()
            problems, seen = check_page(browser, page_path, max_mb, screenshot)
            results[page_path.name] = problems
            print(f"{'FAIL' if problems else 'ok  '} {page_path.name}: {seen['mb']:.1f} MB, "
                  f"{len(seen['figures'])} figures, {seen['formulas']} formulas, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for problem in problems:
                print(f"     {problem}", flush=True)
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
    results = check_folder(Path(args.folder), args.max_mb, not args.no_screenshots)
    bad = [name for name, problems in results.items() if problems]
    print(f"{len(results) - len(bad)} of {len(results)} pages clean" + (f"; failed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
