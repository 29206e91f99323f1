"""Cells by name: the Kronecker class ``rhn``, ``tanh``, ``lstm``, and the diagonal ``lru``.

A new Kronecker-class cell is one file here (subclass :class:`Cell`: set ``gate_blocks`` and
``slots``, write ``phi``) plus a line in :data:`CELLS` (or :func:`register_cell` from your own code).
The LRU (:class:`LRU`) is not of the Kronecker class (its recurrence is element-wise and complex):
exact ``rtrl``, ``bptt`` and ``tbptt-<k>`` work with it, the Kronecker-factored methods do not.
"""

from __future__ import annotations

from .base import Cell, CellStep
from .lru import LRU
from .lstm import LSTM
from .rhn import RHN
from .tanh import TanhRNN

CELLS: dict[str, type] = {"rhn": RHN, "tanh": TanhRNN, "lstm": LSTM, "lru": LRU}


def register_cell(name: str, cls: type[Cell]) -> type[Cell]:
    if not (isinstance(cls, type) and issubclass(cls, (Cell, LRU))):
        raise ValueError(f"a cell must be a subclass of kfrtrl_lab.Cell (or of kfrtrl_lab.LRU), got {cls!r}")
    CELLS[name] = cls
    return cls


def make_cell(name: str, input_size: int, hidden_size: int, **kwargs):
    """The cell called ``name`` (``rhn``, ``tanh``, ``lstm``, ``lru``, or one registered).
    ``kwargs`` go to the cell (the LRU: ``r_min``, ``r_max``, ``max_phase``)."""
    check_cell_name(name)
    return CELLS[name](input_size, hidden_size, **kwargs)


def check_cell_name(name: str) -> None:
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; known cells: {', '.join(CELLS)}")


def is_kronecker(cell) -> bool:
    """True for a cell of the Kronecker class (one weight W read through x̂; CellStep operators)."""
    return isinstance(cell, Cell)


def is_diagonal(cell) -> bool:
    """True for a cell whose recurrence is element-wise (the LRU): exact RTRL keeps per-unit traces."""
    return bool(getattr(cell, "diagonal", False))


__all__ = ["Cell", "CellStep", "TanhRNN", "RHN", "LSTM", "LRU", "CELLS", "make_cell", "register_cell",
           "check_cell_name", "is_kronecker", "is_diagonal"]
