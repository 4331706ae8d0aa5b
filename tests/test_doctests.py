"""The examples in the library's docstrings run and print what they say (``>>>`` lines not marked
``+SKIP``): a docstring example is documentation a user copies, so it must not rot."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pointseg


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(pointseg.__path__, "pointseg."))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"
