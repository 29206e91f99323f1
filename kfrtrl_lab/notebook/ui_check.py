"""The live notebook as a user meets it: JupyterLab in headless Chromium.

``python -m kfrtrl_lab.notebook.ui_check`` copies ``notebooks/`` into a temporary folder (with the
parameters cell's profile set to "quick", so the run takes seconds, not an hour), starts JupyterLab
there on 127.0.0.1 with no token, opens notebook 3, runs all cells from the Run menu, drags the
explorer's "n" slider to its last value and checks that the figure under the controls is redrawn
for that n, that no cell shows an error or stderr output, and that nothing is fetched from outside
127.0.0.1. It then saves the notebook from the UI and checks that ``reports.strip`` returns it to
the committed form (printing what JupyterLab had added). It prints the time of each step, saves a
screenshot (``reports/ui-check.png``) and exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat

from .browser import launch
from .reports import ROOT, strip

NOTEBOOK = "03_variance_uoro_vs_kf.ipynb"
# Every code cell has run: each input prompt shows a number, none a star. (Or something failed:
# an error shows as stderr output, and the cells after it never run.)
RUN_ALL_TIMEOUT_MS = 300_000
PROMPTS = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .filter(e => e.offsetParent !== null).map(e => e.textContent)"""
ALL_RAN = """() => {
  // a folded input (a solution cell starts folded) shows an empty prompt; one not run shows [ ]
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .filter(e => e.offsetParent !== null).map(e => e.textContent);
  return document.querySelector('[data-mime-type="application/vnd.jupyter.stderr"]') ||
         (prompts.length > 0 && prompts.every(t => t === '' || /\\[\\d+\\]/.test(t)));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workspace(tmp: Path, profile: str) -> Path:
    """notebooks/ copied into ``tmp`` (results/ beside it, as the notebooks expect), with the
    parameters cell of the checked notebook set to ``profile``."""
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    (tmp / "results").symlink_to(ROOT / "results")
    path = tmp / "notebooks" / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = re.sub(r'^profile: str = "\w+"', f'profile: str = "{profile}"', params.source, flags=re.MULTILINE)
    nbformat.write(nb, path)
    return path


# Lab settings of the check's own (the user's play no part): the notebook's kernel starts without
# the "Select Kernel" dialog a fresh profile shows, and no news is fetched (no network).
# Every cell is rendered (no windowing): the check reads the prompts of a 60-cell lesson.
SETTINGS = {"@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}


def start_lab(tmp: Path, port: int) -> subprocess.Popen:
    """JupyterLab on 127.0.0.1:port serving ``tmp``, with its own settings and runtime folders and
    no announcements or update checks; its log goes to ``tmp/jupyterlab.log``."""
    for name, values in SETTINGS.items():
        path = tmp / ".settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / ".config"), JUPYTERLAB_SETTINGS_DIR=str(tmp / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / ".workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / ".runtime"),
               # the kernel imports this checkout's package, whichever copy is installed
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={tmp}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI runs as root; the server is on 127.0.0.1 and goes when the check ends
        cmd.append("--allow-root")
    with open(tmp / "jupyterlab.log", "w") as log:  # the server keeps its own handle
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}; see {tmp / 'jupyterlab.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("JupyterLab did not answer within 90 s")


def wait_for_kernel(port: int, timeout: float = 180) -> str:
    """Wait until the notebook's session has a kernel that is idle, connected to the page and
    the same one for a second (JupyterLab may replace the first kernel it starts), and return its
    id: run before that, the cells are sent to a kernel that is going away and never run."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=5) as r:
            kernels = [s["kernel"] for s in json.load(r) if s["path"].endswith(NOTEBOOK)]
        ready = [k["id"] for k in kernels if k["execution_state"] == "idle" and k["connections"] > 0]
        if len(kernels) == 1 and ready and ready[0] == last:
            return last
        last = ready[0] if len(kernels) == 1 and ready else None
        time.sleep(1)
    raise RuntimeError(f"no idle kernel for {NOTEBOOK} within {timeout:.0f} s")


def run_all(page) -> None:
    """Run > Run All Cells, then wait until every code cell has run (or one failed)."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
    try:
        page.wait_for_function(ALL_RAN, timeout=RUN_ALL_TIMEOUT_MS, polling=500)
    except Exception as e:  # say which prompts never showed a count
        prompts = page.evaluate(PROMPTS)
        raise RuntimeError(f"not every cell ran within {RUN_ALL_TIMEOUT_MS / 1000:.0f} s; prompts: {prompts}") from e


def errors_shown(page) -> list[str]:
    """Error and stderr outputs (JupyterLab shows both with the stderr mimetype), widget errors."""
    shown = [f"error output: {out.inner_text()[:300]}"
             for out in page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').all()]
    return shown + [f"widget error: {text}" for text in ("Error displaying widget", "Error rendering")
                    if page.get_by_text(text).count()]


def drag_n_slider(page) -> tuple[str, str, str, str]:
    """Drag the explorer's "n" handle past the end of its track (its last value) with the mouse;
    returns n and the figure's title before and after (the explorer's figure is an output of its
    cell with a display id, which the redraw replaces in place)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    slider = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=re.compile("^n$")))
    readout = slider.locator(".widget-readout")
    before_n = readout.inner_text().strip()
    initial = page.locator(".jp-Cell").filter(has=slider).locator(".js-plotly-plot .gtitle")
    before_title = initial.first.text_content() if initial.count() else ""
    slider.scroll_into_view_if_needed()  # the mouse only reaches what is on screen
    handle, track = slider.locator(".noUi-handle").bounding_box(), slider.locator(".noUi-base").bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] + 20, y, steps=10)
    page.mouse.up()
    try:
        page.wait_for_function("([el, v]) => el.textContent.trim() !== v", arg=[readout.element_handle(), before_n],
                               timeout=10_000)
    except PlaywrightTimeout:
        return before_n, before_n, before_title, ""
    after_n = readout.inner_text().strip()
    figures = page.locator(".jp-Cell").filter(has=slider).locator(".js-plotly-plot .gtitle")
    redrawn = figures.filter(has_text=f"n={after_n},")
    redrawn.wait_for(timeout=120_000)
    if figures.count() != 1:  # replaced in place: no stale copy of the first figure stays below
        return before_n, after_n, before_title, f"{figures.count()} figures in the cell"
    return before_n, after_n, before_title, redrawn.first.text_content()


def check(out_dir: Path, profile: str = "quick", keep: bool = False) -> list[str]:
    """Run the whole check, printing what it sees and the time of each step; returns the
    problems (empty: passed)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    problems, timings = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="kfrtrl-ui-"))
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        timings[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    path = workspace(tmp, profile)
    committed = path.read_text()
    port = free_port()
    server = start_lab(tmp, port)
    lap("start JupyterLab")
    try:
        with sync_playwright() as p:
            browser = launch(p, offline=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # the live UI must work offline too: the browser resolves no host name (see launch),
            # and what it asks for outside the server is a problem. (Routing every request
            # through Playwright instead slows JupyterLab's hundreds of requests to a crawl.)
            local = (f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/", "data:", "blob:")
            page.on("request", lambda r: r.url.startswith(local)
                    or problems.append(f"request outside the server: {r.url[:160]}"))
            page.on("pageerror", lambda e: problems.append(f"uncaught exception: {str(e)[:300]}"))
            try:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{NOTEBOOK}", timeout=180_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=180_000)
                wait_for_kernel(port)
                lap("open the notebook, kernel idle")
                run_all(page)
                lap("run all cells")
                problems += errors_shown(page)
                if not problems:
                    before_n, after_n, before, after = drag_n_slider(page)
                    lap(f"drag n {before_n} -> {after_n}, figure redrawn")
                    print(f"figure before: {before!r}\nfigure after:  {after!r}")
                    if after_n == before_n:
                        problems.append(f"dragging the n slider left it at {before_n}")
                    elif not after or after == before:
                        problems.append("the figure under the controls did not change")
                    problems += errors_shown(page)
                page.keyboard.press("Control+s")
                page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)
                page.wait_for_timeout(500)
                lap("save from the UI")
            except (PlaywrightError, RuntimeError) as e:  # a step that timed out, with what it waited for
                problems.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
            finally:
                out_dir.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out_dir / "ui-check.png"), full_page=True)
                browser.close()
        nb = nbformat.read(path, as_version=4)
        print("JupyterLab's save added (reports.strip removes): " + ("; ".join(strip(nb)) or "nothing"))
        if nbformat.writes(nb) + "\n" != committed:
            problems.append("after reports.strip the saved notebook still differs from the committed one")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if problems or keep:
            print(f"JupyterLab's log and workspace are in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("timings: " + ", ".join(f"{name} {t:.1f} s" for name, t in timings.items())
          + f"; total {sum(timings.values()):.1f} s")
    return list(dict.fromkeys(problems))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", choices=("quick", "full"))
    p.add_argument("--out", default=str(ROOT / "reports"), help="where the screenshot goes")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace and JupyterLab's log")
    args = p.parse_args(argv)
    from .browser import skip_without_chromium

    if skip_without_chromium("ui-check"):
        return 0
    problems = check(Path(args.out), args.profile, args.keep)
    for problem in problems:
        print(f"FAIL {problem}")
    print("ui-check " + ("failed" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
