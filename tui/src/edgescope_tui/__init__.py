"""The edgescope terminal UI and its clients."""

__version__ = "0.1.0"
