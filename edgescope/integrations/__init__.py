"""Framework hooks: edgescope inside the training loops people already have.

Each module is an optional extra and imports its framework; ``import edgescope`` imports none of
them (``tests/test_import_graph.py`` checks it):

- :mod:`edgescope.integrations.lightning`: ``EdgescopeLogger``, a PyTorch Lightning logger
  (``pip install 'edgescope[lightning]'``);
- :mod:`edgescope.integrations.transformers`: ``EdgescopeCallback``, a Hugging Face ``Trainer``
  callback (``pip install 'edgescope[transformers]'``);
- :mod:`edgescope.integrations.keras`: ``EdgescopeCallback``, a Keras 3 callback
  (``pip install 'edgescope[keras]'``);
- :mod:`edgescope.integrations.flower`: ``EdgescopeMod``, a Flower client Mod, and
  ``RecordedStrategy``, a server-side strategy wrapper (``pip install 'edgescope[flower]'``).

Importing one of them where its framework is absent raises an ``ImportError`` that names the
extra to install. ``docs/integrations.md`` has an example of each.
"""

__all__: list[str] = []  # nothing here: each hook is its own module, imported by name
