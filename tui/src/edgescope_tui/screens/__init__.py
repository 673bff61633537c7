"""Screens: the run dashboard with replay, compare, go-to, and the list of open sources."""
