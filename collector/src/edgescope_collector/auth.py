"""Who may read the stream: the token file and the challenge-response check.

The token never crosses the wire. The server sends a fresh random nonce; the client answers
with HMAC-SHA256(token, context + nonce) (:func:`edgescope_tracing.protocol.auth_response`);
the server computes the same and compares in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
import secrets

from edgescope_tracing.protocol import AUTH_SCHEME, NONCE_SIZE, auth_response
from edgescope_tracing.tokens import MIN_TOKEN_BYTES, TokenError, read_token

__all__ = ["MIN_TOKEN_BYTES", "TokenError", "Authenticator", "load_token"]


def load_token(path: str | os.PathLike[str]) -> tuple[bytes, str | None]:
    """The token in ``path`` and a warning, if any (:func:`edgescope_tracing.tokens.read_token`:
    the one reader every client uses too); :class:`TokenError` if it cannot be used."""
    token = read_token(path)
    return token.value, "; ".join(token.warnings) or None


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
