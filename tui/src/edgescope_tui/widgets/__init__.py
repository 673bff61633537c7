"""Widgets that render a ``RunState``: charts, the replay timeline, stacks, events."""

__all__: list[str] = []  # nothing here: each module is reached by name
