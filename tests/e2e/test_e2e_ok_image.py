"""The page's OK mark (issue 13): the K key marks the current image defect-free, the list shows an "OK"
badge and the info bar says so, the mark survives a reload, undoes with Ctrl+Z, and an image with defect
clicks is refused with the server's one-line reason."""
from __future__ import annotations

from pagekit import open_page, real_errors, trained
from serverkit import left_right_points, write_images

BADGE = "#image-list li[data-id='{}'] .badge.okb"


def test_k_marks_the_image_ok_with_a_badge_that_survives_a_reload(page, make_server, tmp_path):
    write_images(tmp_path / "imgs", 3)
    server = make_server(images=[tmp_path / "imgs"])
    with server.client() as api:
        first, second, third = [i["id"] for i in api.get("/api/images").json()["images"]]
        cls, _ = trained(api, first, 160, 128)
        api.post(f"/api/images/{third}/annotations", json={"items": left_right_points(cls)})
    open_page(page, server, n_images=3)
    page.wait_for_function("(id) => S.currentId === id", arg=first)
    page.locator("#viewport").focus()
    # the first image has stripes clicks: refused, and the page says why
    page.keyboard.press("k")
    page.wait_for_selector("text=marks of a defect class")
    assert page.locator(BADGE.format(first)).count() == 0
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(id) => S.current && S.current.id === id", arg=second)
    page.keyboard.press("k")
    page.wait_for_selector(BADGE.format(second))
    assert page.locator(BADGE.format(second)).inner_text() == "OK"
    assert "OK (defect-free)" in page.locator("#infobar").inner_text()
    # between clicks the NG rule is learned from the OK image, and the model panel says so
    page.wait_for_function("() => document.querySelector('#model-info').innerText.includes('1 OK image')",
                           timeout=120000)
    assert "of 1 OK called NG" in page.locator("#model-info").inner_text()      # the per-part confusion
    with server.client() as api:
        assert api.get(f"/api/images/{second}").json()["ok"] is True
    # a reload shows it again
    page.reload()
    open_page(page, server, n_images=3)
    page.wait_for_function("(id) => S.current && S.current.id === id", arg=second)
    page.wait_for_selector(BADGE.format(second))
    page.wait_for_function("() => document.querySelector('#infobar').innerText.includes('OK (defect-free)')")
    # undo takes it back, K marks it again, K once more unmarks
    page.locator("#viewport").focus()
    page.keyboard.press("Control+z")
    page.wait_for_selector(BADGE.format(second), state="detached")
    assert "OK (defect-free)" not in page.locator("#infobar").inner_text()
    page.keyboard.press("k")
    page.wait_for_selector(BADGE.format(second))
    page.keyboard.press("k")
    page.wait_for_selector(BADGE.format(second), state="detached")
    with server.client() as api:
        assert api.get(f"/api/images/{second}").json()["ok"] is False
    # the key is listed in the page's help
    page.keyboard.press("?")
    assert "mark the image OK" in page.locator("#help").inner_text()
    # the refusal above is the one error the page reported (as a toast and on the console)
    assert [e for e in real_errors(page) if "marks of a defect class" not in e] == []
