"""edgescope: see inside AI training runs on small Linux devices without disturbing them."""

__version__ = "0.1.0"
