"""The ``--update`` switch for the IR-in / IR-out pass tests (``tests/test_pass_files.py``).

``--update`` rewrites the expected half of every case file under ``tests/passes/`` with what
the passes now produce (review the diff before committing it).  pytest only reads options
from conftest files it loads at startup, and it loads this one when ``tests/passes`` is on the
command line::

    python -m pytest tests/passes tests/test_pass_files.py --update

``KILN_UPDATE_PASS_TESTS=1 python -m pytest tests/test_pass_files.py`` does the same.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update", action="store_true", default=False,
                     help="rewrite the expected halves of tests/passes/**/*.ir from the passes' output")
