"""The token file: one reader for the collector, ``tail``, ``ls`` and the TUI.

A token file holds the shared secret a collector asks its clients to prove (the challenge in
:mod:`edgescope_tracing.protocol`). Every part of edgescope reads it here, so a file that
authenticates in one authenticates in all:

- the token is the one line that is neither blank nor a comment (starting with ``#``), its
  surrounding whitespace stripped (spaces inside it are kept: a passphrase works);
- a second such line is refused, since it is a second token or a mistake, not something to
  ignore silently;
- it is UTF-8 text of at least :data:`MIN_TOKEN_BYTES` bytes (``openssl rand -hex 32`` makes
  a good one);
- the file (a symlink's target: orchestrators mount secrets through links) must be a regular
  file owned by the reading user or root, and writable by nobody else; one that others may read
  is accepted with a warning, as mounted secrets often are.

Errors are :class:`TokenError` (one sentence naming the file, under
:class:`~edgescope_tracing.errors.TraceError`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import TraceError
from .files import file_kind

__all__ = ["MAX_TOKEN_FILE", "MIN_TOKEN_BYTES", "Token", "TokenError", "read_token"]

MIN_TOKEN_BYTES = 16
"""The shortest token accepted."""
MAX_TOKEN_FILE = 64 * 1024
"""A token file larger than this is not a token file."""


class TokenError(TraceError):
    """The token file cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Token:
    """A token read from a file, and what a user should hear about that file."""

    value: bytes
    warnings: tuple[str, ...] = ()


def read_token(path: str | os.PathLike[str]) -> Token:
    """The token in ``path`` (``~`` expanded), checked as the module says; TokenError if not."""
    p = Path(path).expanduser()
    name = str(p)
    try:
        link = os.readlink(p) if p.is_symlink() else None
    except OSError:
        link = None
    if link is not None:
        name = f"{p} (a link to {os.path.realpath(p)})"
    try:
        # Non-blocking: a FIFO in its place must not hang the reader.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TokenError(f"token file {name} does not exist") from None
    except PermissionError:
        raise TokenError(f"token file {name} cannot be read (permission denied)") from None
    except OSError as e:
        raise TokenError(f"token file {name} cannot be read: {_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"token file {name} is {file_kind(st.st_mode)}, not a regular file")
        _check_owner(st, name)
        if st.st_size > MAX_TOKEN_FILE:
            raise TokenError(f"token file {name} is {st.st_size} bytes; a token file holds a line")
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    except OSError as e:
        raise TokenError(f"token file {name} cannot be read: {_reason(e)}") from None
    finally:
        os.close(fd)
    value = _parse(data, name)
    warnings: list[str] = []
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(f"token file {name} is readable by other users; chmod 600 it")
    return Token(value, tuple(warnings))


def _check_owner(st: os.stat_result, name: str) -> None:
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise TokenError(
            f"token file {name} belongs to uid {st.st_uid}, not to this user (uid {me}) or root; "
            "its owner could change the token"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TokenError(
            f"token file {name} can be changed by other users; chmod go-w it (600 is best)"
        )


def _parse(data: bytes, name: str) -> bytes:
    lines = [(n, line.strip()) for n, line in enumerate(data.splitlines(), 1)]
    tokens = [(n, line) for n, line in lines if line and not line.startswith(b"#")]
    if not tokens:
        raise TokenError(f"token file {name} is empty")
    if len(tokens) > 1:
        raise TokenError(
            f"token file {name} has more than one line (line {tokens[1][0]} is not a # comment); "
            "put the token alone on one line"
        )
    token = tokens[0][1]
    try:
        token.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(f"token file {name} is not UTF-8 text") from None
    if len(token) < MIN_TOKEN_BYTES:
        raise TokenError(
            f"the token in {name} is {len(token)} bytes; use at least {MIN_TOKEN_BYTES} "
            "(e.g. 'openssl rand -hex 32')"
        )
    return token


def _reason(e: OSError) -> str:
    return (e.strerror or str(e) or type(e).__name__).lower()
