"""``GET /api/images/ranking`` (the app's "next image to annotate") against a real server process: the
unannotated images in the order of the measured criterion, the annotated ones left out."""
from __future__ import annotations

import numpy as np
import pytest

from serverkit import left_right_points, ranking_folder, setup_classes, wait_ranking_complete


def _ranking(c, **params):
    r = c.get("/api/images/ranking", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_ranking_orders_unannotated_images_by_the_measured_criterion(make_server, tmp_path):
    from pointseg import Segmenter
    from pointseg.decision import DEFAULT_RANKING, rank_images_for_annotation

    folder = ranking_folder(tmp_path / "imgs")
    server = make_server(images=[folder])
    with server.client() as c:
        images = {i["name"]: i["id"] for i in c.get("/api/images").json()["images"]}
        r = c.get("/api/images/ranking")
        assert r.status_code == 409 and "classes" in r.json()["detail"]          # no model yet: says why
        cls = setup_classes(c)
        rev = c.post(f"/api/images/{images['part_00.png']}/annotations",
                     json={"items": left_right_points(cls)}).json()["rev"]
        assert c.get(f"/api/images/{images['part_00.png']}/overlay.png", params={"min_rev": rev}).status_code == 200
        # features of never-viewed images are queued by the request and computed while the user pauses
        data = wait_ranking_complete(c)
        assert data["complete"] and data["kind"] == DEFAULT_RANKING and data["annotated"] == 1
        ranked = [r["name"] for r in data["ranked"]]
        assert sorted(ranked) == ["part_01.png", "part_02.png", "part_03.png"]      # the annotated one is out
        priorities = [r["priority"] for r in data["ranked"]]
        assert priorities == sorted(priorities, reverse=True) and all(r["current"] for r in data["ranked"])
        # the known answer: colour noise is a kind of image nothing annotated shows (its own descriptor
        # cluster), so it comes first; then the bootstrap refits disagree most on the scene at half contrast,
        # where their boundaries part, and least on the same scene
        assert ranked == ["part_03.png", "part_02.png", "part_01.png"], data["ranked"]
        # the same criterion measured outside the server, with the server's model
        model = tmp_path / "m.pointseg"
        model.write_bytes(c.get("/api/export/model.pointseg").content)
        seg = Segmenter.load(model)
        names = ["part_01.png", "part_02.png", "part_03.png"]
        index = {k["id"]: i for i, k in enumerate(cls)}
        points = [np.array([[p["x"], p["y"], index[p["class_id"]]] for p in left_right_points(cls)])]
        mine = rank_images_for_annotation(seg, [str(folder / n) for n in names], DEFAULT_RANKING,
                                          annotated=[str(folder / "part_00.png")], points=points)
        assert [names[i] for i, _ in mine] == ranked
        expect = {names[i]: p for i, p in mine}
        for row in data["ranked"]:
            assert row["priority"] == pytest.approx(expect[row["name"]], rel=0.05)   # the same committee
        # the other orders the app offers, each checked against the library on the same model
        paths, annotated = [str(folder / n) for n in names], [str(folder / "part_00.png")]
        for kind in ("uncertainty", "rare_class", "diversity", "uncertain_diverse", "committee_diverse",
                     "committee_coverage"):
            data_k = wait_ranking_complete(c, kind=kind)
            want = [p for _, p in sorted(rank_images_for_annotation(seg, paths, kind, annotated=annotated,
                                                                    points=points))]
            want_order = [names[i] for i in np.argsort(-np.asarray(want), kind="stable")]
            assert data_k["kind"] == kind and [r["name"] for r in data_k["ranked"]] == want_order, kind
        # annotating the top image takes it off the list
        c.post(f"/api/images/{images['part_03.png']}/annotations",
               json={"items": left_right_points(cls)[:1]})
        data = _ranking(c, wait=10)
        assert "part_03.png" not in [r["name"] for r in data["ranked"]] and images["part_03.png"] not in data["pending"]
        assert data["annotated"] == 2
        r = c.get("/api/images/ranking", params={"kind": "nope"})
        assert r.status_code == 422 and "uncertainty" in r.json()["detail"]
