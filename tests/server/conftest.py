"""Fixtures: a real ``pointseg serve`` process on a free loopback port (see serverkit.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))
from serverkit import Server, servers_started_in, write_images  # noqa: E402


@pytest.fixture
def make_server(tmp_path):
    """Factory: ``make_server(project, images=[...], ...)``; every server is stopped at the end."""
    yield from servers_started_in(tmp_path)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server with two small images, shared by the read-mostly API tests of a module."""
    root = tmp_path_factory.mktemp("srv")
    folder = root / "imgs"
    write_images(folder, 2)
    s = Server(root / "project", images=[folder]).start()
    yield s
    s.stop()


