"""Cells of the Kronecker class, by name: ``rhn``, ``tanh``, ``lstm``.

A new cell is one file here (subclass :class:`Cell`: set ``gate_blocks`` and ``slots``, write
``phi``) plus a line in :data:`CELLS` (or :func:`register_cell` from your own code).
"""

from __future__ import annotations

from .base import Cell, CellStep
from .lstm import LSTM
from .rhn import RHN
from .tanh import TanhRNN

CELLS: dict[str, type[Cell]] = {"rhn": RHN, "tanh": TanhRNN, "lstm": LSTM}


def register_cell(name: str, cls: type[Cell]) -> type[Cell]:
    if not (isinstance(cls, type) and issubclass(cls, Cell)):
        raise ValueError(f"a cell must be a subclass of kfrtrl_lab.Cell, got {cls!r}")
    CELLS[name] = cls
    return cls


def make_cell(name: str, input_size: int, hidden_size: int, **kwargs) -> Cell:
    """The cell called ``name`` (``rhn``, ``tanh``, ``lstm``, or one registered)."""
    check_cell_name(name)
    return CELLS[name](input_size, hidden_size, **kwargs)


def check_cell_name(name: str) -> None:
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; known cells: {', '.join(CELLS)}")


__all__ = ["Cell", "CellStep", "TanhRNN", "RHN", "LSTM", "CELLS", "make_cell", "register_cell", "check_cell_name"]
