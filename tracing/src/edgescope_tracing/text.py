"""Text from a trace made safe for where it goes: a terminal, a spreadsheet, JSON.

Names, hosts, metric keys and event messages come from whoever wrote the trace (or sent the
stream). Printed raw, an ESC starts a terminal control sequence (OSC 52 writes the clipboard, CSI
moves the cursor and overwrites lines), a CR rewrites the line, a right-to-left override (RLO)
turns ``gpj.exe`` round. Every command that prints or writes such text goes through here:

- :func:`escape`: one line for a terminal: control characters (C0 with tab and newline, DEL,
  C1), lone surrogates and the Unicode format characters that reorder or hide text (bidi
  embeddings, overrides and isolates, zero-width characters, line and paragraph separators)
  become visible escapes, ``\\x1b``, ``\\u202e``. Backslashes are left alone, so ``\\x1b`` in the
  output may also have been those four characters in the trace.
- :func:`escape_block`: the same for text of several lines (a traceback): newline and tab stay.
- :func:`csv_cell`: a text cell of CSV: :func:`escape_block`, and a cell that begins with ``=``,
  ``+``, ``-``, ``@``, tab or CR gets a leading ``'``, so that a spreadsheet shows it as text
  instead of running it as a formula (OWASP's advice on CSV injection). Numeric cells are not
  text cells and are never changed.
- :func:`json_safe`: JSON text (``ensure_ascii=False``) with DEL, C1 and the format characters
  written as ``\\uXXXX``: still the same JSON value, but safe to print (JSON escapes C0 itself).
"""

from __future__ import annotations

import re

__all__ = ["escape", "escape_block", "csv_cell", "json_safe"]

_FORMAT = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
"""Arabic letter mark, zero-width space/joiners and LRM/RLM, line/paragraph separators, bidi
embeddings and overrides, word joiner and invisible operators, bidi isolates, BOM, annotations."""

_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")
_UNSAFE_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")
_UNSAFE_JSON = re.compile(f"[\x7f-\x9f\ud800-\udfff{_FORMAT}]")

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (or strips before looking for one)."""


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def _json_escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def escape(text: str) -> str:
    """``text`` as one line a terminal shows as it is, never obeys.

    >>> escape("run\\x1b]52;c;AAAA\\x07 \\u202egpj.exe")
    'run\\\\x1b]52;c;AAAA\\\\x07 \\\\u202egpj.exe'
    """
    return _UNSAFE.sub(_visible, text)


def escape_block(text: str) -> str:
    """:func:`escape`, keeping newlines and tabs: for text of several lines.

    >>> escape_block("a\\n\\tb\\rc")
    'a\\n\\tb\\\\x0dc'
    """
    return _UNSAFE_BLOCK.sub(_visible, text)


def csv_cell(text: str) -> str:
    """A CSV text cell that a terminal shows and a spreadsheet reads as text.

    >>> csv_cell("=HYPERLINK(\\"http://x\\")"), csv_cell("-lr"), csv_cell("loss")
    ('\\'=HYPERLINK("http://x")', "'-lr", 'loss')
    """
    if text.startswith(FORMULA_START):
        text = "'" + text
    return escape_block(text)


def json_safe(encoded: str) -> str:
    """JSON text with the characters a terminal would act on written as ``\\uXXXX``.

    Only characters inside JSON strings can be such characters, so the value is unchanged.

    >>> json_safe('{"name": "a\\u202eb"}')
    '{"name": "a\\\\u202eb"}'
    """
    return _UNSAFE_JSON.sub(_json_escape, encoded)
