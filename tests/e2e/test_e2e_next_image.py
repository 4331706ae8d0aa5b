"""The page's "next image to annotate": the N key opens the top of the server's ranking, and the sort order
"Most useful to annotate next" lists it first (annotated images last)."""
from __future__ import annotations

from pagekit import open_page, real_errors, trained
from serverkit import ranking_folder, wait_ranking_complete


def test_n_opens_the_top_ranked_image_and_the_sort_order_lists_it_first(page, make_server, tmp_path):
    server = make_server(images=[ranking_folder(tmp_path / "imgs")])
    with server.client() as api:
        ids = {i["name"]: i["id"] for i in api.get("/api/images").json()["images"]}
        _, rev = trained(api, ids["part_00.png"], 160, 128)
        assert api.get(f"/api/images/{ids['part_00.png']}/overlay.png", params={"min_rev": rev}).status_code == 200
        ranking = wait_ranking_complete(api)
    top = ranking["ranked"][0]
    assert top["name"] == "part_03.png"              # the known answer (see ranking_folder, test_ranking_api)
    open_page(page, server, n_images=4)
    page.wait_for_function("(id) => S.currentId === id", arg=ids["part_00.png"])  # by name: the first
    page.locator("#viewport").focus()
    page.keyboard.press("n")
    page.wait_for_function("(id) => S.currentId === id && S.current && S.current.id === id", arg=top["id"])
    assert page.locator("#image-list li.current .name").inner_text() == top["name"]
    # N again: the next one down the ranking (not the image already shown)
    page.keyboard.press("n")
    page.wait_for_function("(id) => S.currentId === id", arg=ranking["ranked"][1]["id"])
    # the sort order: ranked unannotated images first, in the server's order, the annotated one last
    page.select_option("#sort-kind", "next")
    want = [r["name"] for r in ranking["ranked"]] + ["part_00.png"]
    page.wait_for_function(
        "(want) => [...document.querySelectorAll('#image-list li .name')].map((e) => e.textContent).join() === want.join()",
        arg=want, timeout=30000)
    page.select_option("#sort-kind", "name")
    names = page.locator("#image-list li .name").all_inner_texts()
    assert names == sorted(names)
    # the key is listed in the page's help
    page.keyboard.press("?")
    assert "next image to annotate" in page.locator("#help").inner_text()
    assert not real_errors(page), real_errors(page)
