import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """Exported graphs go to a private cache, so each test session exports (and checks) them afresh."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POINTSEG_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))
    yield
    mp.undo()
