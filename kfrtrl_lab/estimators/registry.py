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
#: the largest value of a method's parameter: any tensor shape built from it stays within int64
MAX_PARAMETER = 2**31 - 1


def register_method(cls):
    """Class decorator: make an :class:`~kfrtrl_lab.Estimator` subclass available by its ``name``."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9\-]*(<[a-z_]+>[a-z0-9\-]*)?", name):
        raise ValueError(f"an estimator's name must be lowercase letters, digits and '-', with at most one "
                         f"<parameter> (e.g. 'ok-<r>'), got {name!r}")
    existing = METHODS.get(name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        # a second class under a known name would silently replace it (a built-in, or another plugin's);
        # the same class again (its file loaded anew) is fine
        raise ValueError(f"method name {name!r} is taken by {existing.__module__}.{existing.__qualname__}; "
                         f"register {cls.__qualname__} under another name")
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
                if v > MAX_PARAMETER:
                    raise ValueError(f"method {method!r}: {k} in {pattern} must be at most {MAX_PARAMETER}, got {v}")
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
    loaded = sys.modules.get(name)
    stamp = (str(path.resolve()), path.stat().st_mtime_ns)
    if loaded is not None and getattr(loaded, "_kfrtrl_stamp", None) == stamp:
        return  # already imported and unchanged: running it again would only register the same classes
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    module._kfrtrl_stamp = stamp
