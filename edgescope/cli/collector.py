"""``edgescope collector``: run the device collector in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

from edgescope.cli._extras import require
from edgescope.errors import EdgescopeError, UsageError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "collector",
        help="run the device collector (samples, stores, serves traces)",
        description="Run the edgescope collector in the foreground until SIGTERM or Ctrl-C.",
    )
    try:
        from edgescope_collector.config import add_arguments
    except ImportError:
        p.set_defaults(func=_missing)
        return
    add_arguments(p)
    p.set_defaults(func=_run)


def _missing(args: argparse.Namespace) -> int:
    require("collector", "edgescope collector")
    raise AssertionError("require() returned without the collector installed")


def _run(args: argparse.Namespace) -> int:
    from edgescope_collector.config import ConfigError, config_from_args
    from edgescope_collector.daemon import CollectorError, configure_logging, run

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise UsageError(str(e), e.exit_code) from None
    configure_logging(cfg.log_level)
    try:
        return run(cfg)
    except CollectorError as e:
        raise EdgescopeError(str(e), e.exit_code) from None
