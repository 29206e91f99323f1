"""Gradient estimators, one file a method, by name (:data:`METHODS`).

A new method is one file here (or in your own code) with a class decorated by
:func:`register_method`, plus its import below when it ships with the package.
"""

from .base import Estimator, NonFiniteError, check_inputs
from .registry import METHODS, is_stochastic, load_plugin, make_estimator, parse_method, register_method

# the built-in methods, in the order they are listed (importing registers them)
from .bptt import BPTT, TruncatedBPTT  # noqa: E402  isort: skip
from .rtrl import RTRL  # noqa: E402  isort: skip
from .lru_rtrl import LRURTRL  # noqa: E402  isort: skip
from .kf_rtrl import KFRTRL  # noqa: E402  isort: skip
from .uoro import UORO  # noqa: E402  isort: skip
from .ok import OK, OKOfficial  # noqa: E402  isort: skip
from .kf_avg import KFAverage  # noqa: E402  isort: skip
from .snap import SnAp1  # noqa: E402  isort: skip

__all__ = ["Estimator", "NonFiniteError", "check_inputs", "METHODS", "is_stochastic", "make_estimator",
           "parse_method", "register_method", "load_plugin", "BPTT", "TruncatedBPTT", "RTRL", "LRURTRL", "KFRTRL", "UORO", "OK", "OKOfficial", "KFAverage", "SnAp1"]
