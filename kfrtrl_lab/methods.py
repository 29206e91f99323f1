"""Estimators by name: ``bptt``, ``tbptt-<k>``, ``rtrl``, ``kf-rtrl``, ``uoro``."""

from __future__ import annotations

import re

from .bptt import TruncatedBPTT
from .estimator import Estimator
from .kf_rtrl import KFRTRL
from .model import RecurrentModel
from .rtrl import RTRL
from .uoro import UORO

ONLINE_METHODS = {cls.name: cls for cls in (RTRL, KFRTRL, UORO)}
METHODS = ("bptt", "tbptt-<k>", *ONLINE_METHODS)  # tbptt-<k>: k a positive int, e.g. tbptt-16


def make_estimator(method: str, model: RecurrentModel, batch_size: int, **kwargs) -> Estimator:
    """The estimator called ``method`` for ``batch_size`` lanes of ``model``.

    Keyword arguments go to the estimator: ``reduction`` ("mean" | "sum"), ``seed``.
    """
    if method in ONLINE_METHODS:
        return ONLINE_METHODS[method](model, batch_size, **kwargs)
    if method == "bptt":
        return TruncatedBPTT(model, batch_size, truncation=None, **kwargs)
    match = re.fullmatch(r"tbptt-([0-9]+)", method) if isinstance(method, str) else None
    if match and int(match.group(1)) >= 1:
        return TruncatedBPTT(model, batch_size, truncation=int(match.group(1)), **kwargs)
    raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)} (e.g. 'tbptt-16')")


def is_stochastic(method: str) -> bool:
    return method in ONLINE_METHODS and ONLINE_METHODS[method].stochastic
