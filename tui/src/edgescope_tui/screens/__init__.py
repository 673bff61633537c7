"""Screens: the run dashboard with replay, compare, go-to, and the list of open sources."""

__all__: list[str] = []  # nothing here: each module is reached by name
