"""``python -m edgescope_collector``: the collector, without the ``edgescope`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"edgescope collector: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError, add_arguments, config_from_args

    parser = _Parser(
        prog="python -m edgescope_collector",
        description="The edgescope collector: samples this device, stores and serves traces.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"edgescope collector: {e}", file=sys.stderr)
        return e.exit_code
    from .daemon import CollectorError, configure_logging, run

    configure_logging(cfg.log_level)
    try:
        return run(cfg)
    except CollectorError as e:
        print(f"edgescope collector: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
