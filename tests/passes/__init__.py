"""IR-in / IR-out pass test cases (``*.ir``), run by ``tests/test_pass_files.py``.

A package so that this folder's ``conftest.py`` is imported as ``passes.conftest`` and does
not shadow ``tests/conftest.py``, which test modules import as ``conftest``."""
