"""Where the SDK and the collector meet without configuration: the ingest socket's path, and the
collector's stream address and token file for a process on the device that reads it back."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "COLLECTOR_ENV",
    "COLLECTOR_TOKEN_ENV",
    "collector_address",
    "collector_token_file",
    "default_ingest_socket",
    "ingest_socket",
]

COLLECTOR_ENV = "EDGESCOPE_COLLECTOR"
"""The device's collector's stream address (``HOST[:PORT]``) for a process that reads it back
(the Flower Mod's device figures); inherited, like ``EDGESCOPE_SOCKET``, from whatever starts
the process (a SuperNode). Default: the loopback address on the default port."""
COLLECTOR_TOKEN_ENV = "EDGESCOPE_COLLECTOR_TOKEN_FILE"
"""The token file for that collector, where it was started with ``--token-file``."""


def default_ingest_socket() -> Path:
    """The collector's default ingest socket for this user.

    ``$XDG_RUNTIME_DIR/edgescope/ingest.sock`` where that is set, else
    ``/run/edgescope/ingest.sock`` for root, else ``/tmp/edgescope-$UID/ingest.sock``.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "edgescope" / "ingest.sock"
    uid = os.getuid()
    if uid == 0:
        return Path("/run/edgescope/ingest.sock")
    return Path(f"/tmp/edgescope-{uid}/ingest.sock")


def ingest_socket() -> Path:
    """``EDGESCOPE_SOCKET`` when set, else :func:`default_ingest_socket`."""
    env = os.environ.get("EDGESCOPE_SOCKET")
    return Path(env) if env else default_ingest_socket()


def collector_address() -> tuple[str, int]:
    """``(host, port)`` from ``EDGESCOPE_COLLECTOR`` when set, else ``127.0.0.1`` on the default
    port; ValueError (one phrase naming the variable) when it is malformed."""
    # here, not at the top: the SDK imports this module, and the protocol (asyncio) is not its
    from .protocol import DEFAULT_PORT, parse_target

    env = os.environ.get(COLLECTOR_ENV)
    if not env:
        return "127.0.0.1", DEFAULT_PORT
    try:
        return parse_target(env)
    except ValueError as e:
        raise ValueError(f"{COLLECTOR_ENV}: {e}") from None


def collector_token_file() -> Path | None:
    """``EDGESCOPE_COLLECTOR_TOKEN_FILE`` when set; read it with :mod:`edgescope_tracing.tokens`."""
    env = os.environ.get(COLLECTOR_TOKEN_ENV)
    return Path(env) if env else None
