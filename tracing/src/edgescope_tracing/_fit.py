"""Bounds that make every run start and every event fit in one frame, whatever is in them.

A run start is restated in every keyframe for as long as the run is active, so its size is
the format's business, not the producer's: the encoder bounds it here before it registers the
run. An event (a log line, a traceback, a detector's detail) is bounded the same way. Within
a bound a field is kept byte for byte; a field past its bound is cut, and says so:

* a map (``config``, ``device``, an event's ``detail``) keeps, in order, every top-level item
  that still fits, and gains the item ``TRUNCATED_KEY`` = ``{"bytes": N, "keys": K, "kept":
  k}``: its encoded size and number of items before the cut, and how many were kept;
* a string (``name``, ``host``, an event's ``kind`` and ``message``) is cut at a character
  boundary and ends with ``TRUNCATED_TEXT``;
* ``tags`` keeps the first tags that fit within ``TAGS_LIMIT`` bytes together.

The bounds add up to less than a frame's payload, so a run start or an event always fits one
frame, and a keyframe (split into parts that each fit a frame) can restate any number of runs.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = [
    "CONFIG_LIMIT",
    "DEVICE_LIMIT",
    "TEXT_LIMIT",
    "TAGS_LIMIT",
    "RUN_ID_LIMIT",
    "MESSAGE_LIMIT",
    "DETAIL_LIMIT",
    "TRUNCATED_KEY",
    "TRUNCATED_TEXT",
    "fit_map",
    "fit_text",
    "fit_tags",
    "packed_size",
]

CONFIG_LIMIT = 40 * 1024
"""Encoded bytes of a run's config (a training-arguments dump is 4-25 KB)."""
DEVICE_LIMIT = 8 * 1024
"""Encoded bytes of a run's device facts."""
TEXT_LIMIT = 1024
"""UTF-8 bytes of a run's name and of its host."""
TAGS_LIMIT = 4 * 1024
"""UTF-8 bytes of a run's tags together."""
RUN_ID_LIMIT = 256
"""Characters of a run id: an identity is never cut, a longer one is refused."""
MESSAGE_LIMIT = 16 * 1024
"""UTF-8 bytes of an event's message (a traceback of some hundred frames)."""
DETAIL_LIMIT = 40 * 1024
"""Encoded bytes of an event's detail."""
TRUNCATED_KEY = "edgescope.truncated"
"""The item a cut map gains: ``{"bytes": encoded size before, "keys": items before, "kept": n}``."""
TRUNCATED_TEXT = "…[truncated]"


def packed_size(value: Any) -> int:
    """Encoded size in bytes; TypeError (as the encoder raises) for what msgpack cannot pack."""
    try:
        return len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"record cannot be encoded: {e}") from None


def fit_map(m: dict[str, Any], limit: int) -> tuple[dict[str, Any], bool]:
    """``m`` if it encodes within ``limit`` bytes, else its items that fit and the marker."""
    size = packed_size(m)
    if size <= limit:
        return m, False
    # The marker's own size, with room for the largest figures it can hold.
    budget = limit - packed_size({TRUNCATED_KEY: {"bytes": size, "keys": len(m), "kept": len(m)}})
    kept: dict[str, Any] = {}
    used = 5  # the map header, at its largest
    for k, v in m.items():
        n = packed_size(k) + packed_size(v)
        if used + n <= budget:
            kept[k] = v
            used += n
    kept[TRUNCATED_KEY] = {"bytes": size, "keys": len(m), "kept": len(kept)}
    return kept, True


def fit_text(s: str, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """``s`` if its UTF-8 is within ``limit`` bytes, else cut with ``TRUNCATED_TEXT``."""
    data = s.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return s, False
    room = limit - len(TRUNCATED_TEXT.encode())
    return data[:room].decode("utf-8", "ignore") + TRUNCATED_TEXT, True


def fit_tags(tags: tuple[str, ...], limit: int = TAGS_LIMIT) -> tuple[tuple[str, ...], bool]:
    """The first tags that fit within ``limit`` bytes together (each cut to ``TEXT_LIMIT``)."""
    out: list[str] = []
    used = 0
    cut = False
    for t in tags:
        t, c = fit_text(t)
        n = len(t.encode("utf-8", "surrogatepass")) + 5
        if used + n > limit:
            return tuple(out), True
        cut = cut or c
        out.append(t)
        used += n
    return tuple(out), cut
