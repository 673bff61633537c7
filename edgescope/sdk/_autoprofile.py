"""How ``record --profile python`` reaches into a CMD that never calls ``edgescope.init()``.

:func:`child_env` puts ``_autoprofile_site`` (whose ``sitecustomize`` starts a profiled run in
each Python CMD starts) first on CMD's ``PYTHONPATH``; :func:`no_stacks_reason` says, in one
sentence, why no Python stacks came when none did.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "SITE_DIR", "child_env", "no_stacks_reason"]

ENV = "EDGESCOPE_AUTOPROFILE"
"""Names the directory where a child's bootstrap writes why it could not start (one file per
pid); set only by :func:`child_env`."""
SITE_DIR = Path(__file__).resolve().with_name("_autoprofile_site")


def child_env(env: dict[str, str], status_dir: Path) -> None:
    """Make every Python started with ``env`` start a profiled run (see ``sitecustomize``)."""
    status_dir.mkdir(parents=True, exist_ok=True)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(SITE_DIR) + (os.pathsep + old if old else "")
    env[ENV] = str(status_dir)
    env["EDGESCOPE_PROFILE"] = "python"


def no_stacks_reason(status_dir: Path) -> str:
    """Why no Python process of CMD recorded stacks, in one sentence."""
    reasons = []
    try:
        for p in sorted(status_dir.iterdir()):
            reasons.append(p.read_text(errors="replace").strip())
    except OSError:  # no such directory: no child wrote to it
        reasons = []
    if reasons:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        return f"--profile python: no Python stacks were recorded: {reasons[0]}{more}"
    return (
        "--profile python: no Python stacks were recorded: CMD started no Python that loaded "
        "the sampler (it runs no Python, or one that ignores PYTHONPATH: -E, -I)"
    )
