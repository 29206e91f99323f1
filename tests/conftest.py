import pytest
import torch

import kfrtrl_lab as kl

CELLS = {"tanh": kl.TanhRNN, "rhn": kl.RHN, "lstm": kl.LSTM}


def make_model(cell="rhn", m=3, n=6, k=4, std=0.5, seed=0, dtype=torch.float64):
    """A random model whose weights are large enough that every path (through H, through
    the gates) carries signal — the default RHN init of 0.01 would make H ≈ diag(f)."""
    torch.manual_seed(seed)
    return kl.RecurrentModel(CELLS[cell](m, n, init_std=std), k, init_std=std).to(dtype)


def make_sequence(model, T, batch=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (T,) if batch is None else (T, batch)
    dtype = model.cell.weight.dtype
    x = torch.randn(*shape, model.input_size, generator=g).to(dtype)
    y = torch.randint(0, model.output_size, shape, generator=g)
    return x, y


@pytest.fixture(params=sorted(CELLS))
def cell_name(request):
    return request.param


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tensors here are tiny; one thread avoids OpenMP oversubscription when other
    # processes share the two cores, and keeps float reductions in a fixed order.
    torch.set_num_threads(1)


# Headless Chromium for the report and site checks (one per test module), skipped where there is
# neither Chromium nor root to install it.
@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright", reason="pip install playwright (the test extra)")
    from playwright.sync_api import sync_playwright

    from kfrtrl_lab.notebook.browser import chromium, launch

    try:
        chromium()
    except SystemExit as e:
        pytest.skip(str(e))
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def notebook_cells(notebook: str, tags=("solution",), namespace: dict | None = None) -> dict:
    """Execute the code cells of ``notebooks/<notebook>`` tagged with any of ``tags``, in order, in one
    namespace (as the notebook runs them after its imports); returns the namespace."""
    from pathlib import Path

    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / notebook, as_version=4)
    namespace = {} if namespace is None else namespace
    for cell in nb.cells:
        if cell.cell_type == "code" and set(tags) & set(cell.metadata.get("tags", [])):
            exec(cell.source, namespace)
    return namespace
