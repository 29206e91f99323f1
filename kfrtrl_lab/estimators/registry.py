"""Estimators by name. A name is fixed (``rtrl``) or a family with one positive-integer parameter
written in angle brackets (``tbptt-<k>``, ``ok-<r>``): ``tbptt-16`` builds the class registered
as ``tbptt-<k>`` with ``k=16``.

    @register_method
    class MyEstimator(Estimator):
        name = "my-method"
        ...
    kl.make_estimator("my-method", model, batch_size)
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

#: name pattern -> estimator class, in registration order
METHODS: dict[str, type] = {}
_PATTERNS: dict[str, re.Pattern] = {}
_PARAMETER = re.compile(r"<([a-z_]+)>")


def register_method(cls):
    """Class decorator: make an :class:`~kfrtrl_lab.Estimator` subclass available by its ``name``."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9\-]*(<[a-z_]+>[a-z0-9\-]*)?", name):
        raise ValueError(f"an estimator's name must be lowercase letters, digits and '-', with at most one "
                         f"<parameter> (e.g. 'ok-<r>'), got {name!r}")
    pieces = _PARAMETER.split(name)
    regex = re.escape(pieces[0])
    if len(pieces) == 3:
        regex += rf"(?P<{pieces[1]}>[0-9]+)" + re.escape(pieces[2])
    METHODS[name] = cls
    _PATTERNS[name] = re.compile(regex)
    return cls


def known_methods() -> str:
    return ", ".join(METHODS)


def parse_method(method: str):
    """(class, keyword arguments) for a method name such as ``tbptt-16``; ValueError otherwise."""
    if isinstance(method, str):
        for pattern, regex in _PATTERNS.items():
            match = regex.fullmatch(method)
            if match is None:
                continue
            kwargs = {k: int(v) for k, v in match.groupdict().items()}
            for k, v in kwargs.items():
                if v < 1:
                    raise ValueError(f"method {method!r}: {k} in {pattern} must be a positive int, got {v}")
            return METHODS[pattern], kwargs
    raise ValueError(f"unknown method {method!r}; known methods: {known_methods()} "
                     f"(<k>, <r>: a positive int, e.g. 'tbptt-16')")


def make_estimator(method: str, model, batch_size: int, **kwargs):
    """The estimator called ``method`` for ``batch_size`` lanes of ``model``.

    Keyword arguments go to the estimator: ``reduction`` ("mean" | "sum"), ``seed``.
    """
    cls, params = parse_method(method)
    return cls(model, batch_size, **params, **kwargs)


def is_stochastic(method: str) -> bool:
    return parse_method(method)[0].stochastic


def load_plugin(path) -> None:
    """Import a Python file of the user's, so that the estimators it registers (with
    :func:`register_method`) can be named like the built-in ones."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"plugin {str(path)!r} is not a file; expected a .py file that registers estimators")
    name = f"kfrtrl_lab_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
