"""A bounded, seeded schemathesis run against a real ``pointseg serve`` and its own OpenAPI schema (#14).

Every operation gets a fixed example budget (positive and negative data, all Hypothesis phases, derandomised
so a failure reproduces), and each response must be no 5xx, conform to the schema (content type and body
of documented responses), and never contain a server path. Runs in about 90 s on two cores.
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance  # noqa: E402

from serverkit import Server, left_right_points, setup_classes, write_images  # noqa: E402

#: examples per operation (the run's size); the seed is Hypothesis' derandomised one
EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    write_images(root / "imgs", 2, h=48, w=64)
    s = Server(root / "project", images=[root / "imgs"], env={"POINTSEG_MAX_UPLOAD_MB": "1"}).start()
    with s.client() as c:                                  # a project with a model, so routes do real work
        cls = setup_classes(c, ("bg", "fg"))
        img = c.get("/api/images").json()["images"][0]
        c.post(f"/api/images/{img['id']}/annotations", json={"items": left_right_points(cls, w=64, h=48)})
    s.root = root
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    # (the endless event stream is not in the schema; tests/server/test_server_api.py covers it)
    return schemathesis.openapi.from_url(fuzz_server.url + "/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def no_server_paths(ctx, response, case):
    """No response names a folder of the server's file system."""
    text = response.content.decode("utf-8", "replace") if response.content else ""
    for secret in _SECRETS:
        if secret and secret in text:
            raise AssertionError(f"{case.method} {case.path} returned a server path ({secret!r})")
    return None


_SECRETS: list[str] = []


@pytest.fixture(autouse=True)
def _secrets(fuzz_server):
    _SECRETS[:] = [str(fuzz_server.root), str(fuzz_server.project), "/tmp/", "/home/", "/root/"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_keeps_its_schema(case, fuzz_server):
    case.call_and_validate(base_url=fuzz_server.url, timeout=120,
                           checks=[not_a_server_error, response_schema_conformance, content_type_conformance,
                                   no_server_paths])
