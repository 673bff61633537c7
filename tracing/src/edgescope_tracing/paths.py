"""Where the SDK and the collector meet without configuration: the ingest socket's path."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_ingest_socket", "ingest_socket"]


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
