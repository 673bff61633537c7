"""Widgets that render a ``RunState``: charts, the replay timeline, stacks, events."""
