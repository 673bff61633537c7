"""Shared by every test folder: this folder is on ``sys.path`` (pytest's rootdir-relative
import of a ``conftest.py`` in a folder without ``__init__.py``), so ``realdata`` imports."""
