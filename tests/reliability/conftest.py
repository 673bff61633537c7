"""The reliability suite (issue #11): the collector and the SDK as users meet them.

The real collector process helper lives with the collector's tests; these tests use it too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))
