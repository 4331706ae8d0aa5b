"""The page's ES modules are served (as JavaScript) and nothing else of the package is."""
from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "src" / "pointseg" / "server" / "static"


def test_every_imported_module_is_served_as_javascript_and_paths_are_refused(make_server):
    server = make_server()
    with server.client() as api:
        modules = sorted(p.name for p in STATIC.glob("*.js"))
        imported = set()
        for name in modules:
            r = api.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
            imported |= set(re.findall(r'from "\./([a-z_-]+\.js)"', r.text))
        assert imported <= set(modules) and "app.js" in modules and len(imported) >= 8
        assert "/static/app.js" in api.get("/").text
        for bad in ("../app.py", "..%2Fapp.py", "store.py", "index.html.bak", "App.js", "missing.js"):
            assert api.get(f"/static/{bad}").status_code == 404, bad
