"""The SDK's checks of what users hand it: metric values, names, steps, config and tags.

These run on the slow path only: ``log()`` checks a float value under a name it has seen
before inline, and calls here for anything else. Every refusal is a ``TypeError`` or a
``ValueError`` that names the argument, raised at the user's call, never later in a thread.

Values are stored as floats (the trace format's metric type). Ints are converted exactly or
refused; numpy scalars, 0-d numpy arrays and 0-d tensors (anything with ``shape == ()`` and
``item()``, the protocol numpy and PyTorch share) are read through ``item()``, so neither numpy
nor torch is ever imported here.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MAX_KEY_LEN",
    "MAX_KEYS",
    "MAX_MARK_LEN",
    "as_float",
    "check_key",
    "check_step",
    "jsonable_config",
    "check_tags",
    "normalize_metrics",
]

MAX_KEY_LEN = 200
"""Longest metric name accepted."""
MAX_KEYS = 10_000
"""Distinct metric names one run may use (names are interned once per keyframe interval)."""
MAX_MARK_LEN = 4096
"""Longest ``mark()`` text accepted."""
_EXACT = 1 << 53


def _short(v: object) -> str:
    try:
        r = repr(v)
    except Exception:  # a user object whose repr fails must not hide the real error
        r = f"<{type(v).__name__} object>"
    return r if len(r) <= 60 else r[:57] + "..."


def _exact(key: str, v: int) -> float:
    if -_EXACT <= v <= _EXACT:
        return float(v)
    f = float(v) if abs(v) < 1 << 1023 else None
    if f is not None and int(f) == v:
        return f
    raise ValueError(
        f"edgescope.log: the value of {key!r} is the integer {v}, which a float (the trace's "
        "metric type) cannot hold exactly; convert it yourself if rounding is fine"
    )


def as_float(key: str, v: object) -> float:
    """One metric value as a float, or a ``TypeError``/``ValueError`` that names ``key``."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, float):
        return float(v)
    if isinstance(v, int):
        return _exact(key, v)
    shape = getattr(v, "shape", None)
    if shape is not None:
        try:
            dims = tuple(shape)
        except TypeError:
            dims = None
        if dims is not None and dims != ():
            raise ValueError(
                f"edgescope.log: the value of {key!r} is an array of shape {dims}; log takes "
                "scalars (reduce it, or take one element with .item())"
            )
        item = getattr(v, "item", None)
        if dims == () and callable(item):
            x = item()
            if x is v:
                raise TypeError(
                    f"edgescope.log: {type(v).__name__}.item() of {key!r} returned itself"
                )
            return as_float(key, x)
    cls = type(v)
    if hasattr(cls, "__index__"):
        return _exact(key, operator.index(v))  # type: ignore[arg-type]
    if hasattr(cls, "__float__"):
        try:
            return float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"edgescope.log: the value of {key!r} ({_short(v)}): {e}") from None
    raise TypeError(
        f"edgescope.log: the value of {key!r} is a {cls.__name__} ({_short(v)}); log takes "
        "numbers: int, float, numpy scalars or 0-d tensors"
    )


def check_key(k: object, known: set[str]) -> str:
    """A new metric name, checked; adds it to ``known``."""
    if type(k) is not str:
        if isinstance(k, str):
            k = str(k)
        else:
            raise TypeError(
                f"edgescope.log: metric names must be strings, got {type(k).__name__} {_short(k)}"
            )
    if k in known:
        return k
    if not k:
        raise ValueError("edgescope.log: a metric name is empty")
    if len(k) > MAX_KEY_LEN:
        raise ValueError(
            f"edgescope.log: the metric name {k[:40]!r}... is {len(k)} characters long; at most "
            f"{MAX_KEY_LEN} are allowed"
        )
    if len(known) >= MAX_KEYS:
        raise ValueError(
            f"edgescope.log: {k!r} would be metric name number {MAX_KEYS + 1} of this run; at "
            f"most {MAX_KEYS} distinct names are allowed (put the step in step=, not in the name)"
        )
    known.add(k)
    return k


def normalize_metrics(metrics: object, known: set[str]) -> dict[str, float]:
    """A fresh ``{name: float}`` from what the user passed, or a clear error."""
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"edgescope.log: metrics must be a dict of name to number, like "
            f"{{'loss': 0.5}}; got {type(metrics).__name__} {_short(metrics)}"
        )
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = check_key(k, known)
        out[key] = v if type(v) is float else as_float(key, v)
    return out


def check_step(step: object) -> int:
    """A step given to ``log()``: a non-negative integer (numpy integers included)."""
    if isinstance(step, bool) or not hasattr(type(step), "__index__"):
        raise TypeError(
            f"edgescope.log: step must be an integer, got {type(step).__name__} {_short(step)}"
        )
    s = operator.index(step)  # type: ignore[arg-type]
    if s < 0:
        raise ValueError(f"edgescope.log: step must be 0 or more, got {s}")
    if s >= 1 << 62:
        raise ValueError(f"edgescope.log: step {s} is too large (at most 2**62 - 1)")
    return int(s)


def check_tags(tags: object) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise TypeError(
            f"edgescope.init: tags must be a list of strings, got {type(tags).__name__} "
            f"{_short(tags)}"
        )
    out = []
    for t in tags:
        if not isinstance(t, str):
            raise TypeError(
                f"edgescope.init: tags must be strings, got {type(t).__name__} {_short(t)}"
            )
        out.append(str(t))
    return tuple(out)


def _jsonable(v: Any, depth: int) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        i = int(v)
        return i if -(1 << 63) <= i < 1 << 64 else str(i)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bytes):
        return bytes(v)
    if depth > 20:
        return _short(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, os.PathLike):
        return str(os.fspath(v))
    shape = getattr(v, "shape", None)
    item = getattr(v, "item", None)
    if shape is not None and callable(item):
        try:
            if tuple(shape) == ():
                x = item()
                if x is not v:
                    return _jsonable(x, depth + 1)
        except (TypeError, ValueError):
            pass
    return str(v)


def jsonable_config(config: object) -> dict[str, Any]:
    """The run's config as plain data: a mapping, or an object with attributes (argparse).

    Numbers, strings, lists and nested mappings are kept; numpy scalars become Python numbers;
    paths and any other object become their ``str()``.
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        src: Mapping[Any, Any] = config
    elif hasattr(config, "__dict__") and not isinstance(config, type):
        src = vars(config)
    else:
        raise TypeError(
            f"edgescope.init: config must be a dict (or an argparse.Namespace), got "
            f"{type(config).__name__} {_short(config)}"
        )
    result: dict[str, Any] = _jsonable(dict(src), 0)
    return result
