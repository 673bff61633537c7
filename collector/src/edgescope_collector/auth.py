"""Who may read the stream: the token file and the challenge-response check.

The token never crosses the wire. The server sends a fresh random nonce; the client answers
with HMAC-SHA256(token, context + nonce) (:func:`edgescope_tracing.protocol.auth_response`);
the server computes the same and compares in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from edgescope_tracing.protocol import AUTH_SCHEME, NONCE_SIZE, auth_response

__all__ = ["MIN_TOKEN_BYTES", "TokenError", "Authenticator", "load_token"]

MIN_TOKEN_BYTES = 16


class TokenError(Exception):
    """The token file cannot be used (one sentence)."""


def load_token(path: Path) -> tuple[bytes, str | None]:
    """The token in ``path`` (surrounding whitespace stripped) and a warning, if any.

    Refused: a missing or unreadable file, an empty token, one shorter than 16 bytes. A file that
    others may read is accepted with a warning, as secrets mounted by orchestrators often are.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"token file {path} is not a regular file")
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise TokenError(f"token file {path} does not exist") from None
    except PermissionError:
        raise TokenError(f"token file {path} cannot be read (permission denied)") from None
    except OSError as e:
        raise TokenError(f"token file {path} cannot be read: {e.strerror or e}") from None
    if not data:
        raise TokenError(f"token file {path} is empty")
    if len(data) < MIN_TOKEN_BYTES:
        raise TokenError(
            f"the token in {path} is {len(data)} bytes; use at least {MIN_TOKEN_BYTES} "
            "(e.g. 'openssl rand -hex 32')"
        )
    warning = None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"token file {path} is readable by other users; chmod 600 it"
    return data, warning


class Authenticator:
    """Issues nonces and checks answers; ``required`` is False when no token is configured."""

    scheme = AUTH_SCHEME

    def __init__(self, token: bytes | None) -> None:
        self._token = token

    @property
    def required(self) -> bool:
        return self._token is not None

    @staticmethod
    def nonce() -> bytes:
        return secrets.token_bytes(NONCE_SIZE)

    def verify(self, nonce: bytes, answer: object) -> bool:
        """Whether ``answer`` proves the token for ``nonce`` (constant-time comparison)."""
        if self._token is None:
            return True
        if type(answer) is not bytes:
            return False
        return hmac.compare_digest(auth_response(self._token, nonce), answer)
