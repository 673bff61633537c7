"""The SDK: what a training script calls (``edgescope.init``, ``log``, ``mark``, ``finish``).

``_run`` holds the run and the hot path, ``_ship`` the buffer's shipping to a file or the
collector, ``_values`` what a logged value may be, ``_device`` the facts of the device, and
``_profiler`` (with ``_autoprofile``) the in-process stack sampler. The public names are
re-exported by :mod:`edgescope`; nothing here imports the collector or the UI.
"""

__all__: list[str] = []  # the public names are edgescope's (edgescope.__all__)
