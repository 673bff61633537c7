"""The edgescope device collector."""

__version__ = "0.1.0"
