"""``python -m kfrtrl_lab certify <method>``: the certificate notebook (``certificate.ipynb`` beside
this file) executed for one estimator with papermill and rendered to an offline HTML page, with its
verdict beside it as JSON (``certificate-METHOD-CELL.json``: the outcome, whether it passed, and the
numbers it rests on)."""

from __future__ import annotations

import json
from pathlib import Path

from ..cells import CELLS, check_cell_name, is_diagonal
from ..estimators import load_plugin, parse_method
from ..estimators.base import diagonal_methods
from .reports import PROFILES, to_html

NOTEBOOK = Path(__file__).with_name("certificate.ipynb")


def certify(method: str, out: str | Path = "certificates", cell: str = "rhn", plugin: str | None = None,
            profile: str = "full", **parameters) -> tuple[Path, dict]:
    """Execute the certificate for ``method`` (registered here, or by the file ``plugin``) into
    ``out``; returns the HTML page and the verdict (``passed``: False for a stochastic method that
    fails the unbiasedness test, or a deterministic one that claims to be exact and is not;
    ``summary``: the verdict and its numbers in one line). Names are checked before the notebook starts."""
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    check_cell_name(cell)
    if plugin is not None:
        plugin = str(Path(plugin).resolve())
        load_plugin(plugin)
    method_cls = parse_method(method)[0]
    if is_diagonal(CELLS[cell]) and not method_cls.supports_diagonal:
        raise ValueError(f"method {method!r} needs a Kronecker-class cell (rhn, tanh, lstm); with --cell {cell} "
                         f"certify one of {', '.join(diagonal_methods())}, or a method whose class sets "
                         f"supports_diagonal = True")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"certificate-{method}-{cell}.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", progress_bar=False, cwd=str(out),
                               parameters={"method": method, "cell": cell, "plugin": plugin, "profile": profile,
                                           **parameters})
    page = to_html(executed, out)
    return page, json.loads((out / f"certificate-{method}-{cell}.json").read_text())
