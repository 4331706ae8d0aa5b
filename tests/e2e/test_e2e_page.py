"""The page, tried as a new user would (issue 12, items 1–12): each test fails without its fix.

A real ``pointseg serve`` process, real Chromium; what is checked is what the user sees (element boxes,
canvas pixels, the dialog's text, files downloaded) and what the server stored.
"""
from __future__ import annotations

import pytest

import serverkit
from pagekit import (MARK_ALPHA_JS, click_image, open_page, real_errors, screen_of, trained, view_pixels,
                     wait_overlay)
from serverkit import write_images

pytestmark = pytest.mark.browser
W, H = 320, 240


def _rgb(hexcolor: str) -> list[int]:
    return [int(hexcolor[i:i + 2], 16) for i in (1, 3, 5)]


@pytest.fixture
def one_image(make_server, tmp_path):
    write_images(tmp_path / "imgs", 1, h=H, w=W)
    server = make_server(images=[tmp_path / "imgs"])
    api = server.client()
    image_id = api.get("/api/images").json()["images"][0]["id"]
    yield server, api, image_id
    api.close()


# ---------------------------------------------------------------------------------------------- item 1
def test_keys_pick_classes_right_after_adding_and_renaming_a_class(page, one_image):
    server, api, image_id = one_image
    open_page(page, server)
    for name in ("alpha", "beta"):
        page.fill("#new-class-name", name)
        page.press("#new-class-name", "Enter")
        page.wait_for_selector(f"#class-list li:has-text('{name}')")
    # no click anywhere: the next key goes to the viewer, not into the field
    page.keyboard.press("1")
    assert page.input_value("#new-class-name") == ""
    assert page.evaluate("() => document.activeElement.id") == "viewport"
    classes = api.get("/api/classes").json()["classes"]
    page.wait_for_function(f"() => S.classId === {classes[0]['id']}")
    click_image(page, 40, 40)
    page.wait_for_function("() => S.annotations.length === 1")
    assert [a["class_id"] for a in api.get(f"/api/images/{image_id}/annotations").json()["annotations"]] \
        == [classes[0]["id"]]
    # rename beta with Enter; then "2" picks it and "1" goes back
    page.dblclick("#class-list li:has-text('beta') .cname")
    page.fill("#class-list .cname input", "gamma")
    page.press("#class-list .cname input", "Enter")
    page.wait_for_selector("#class-list li:has-text('gamma')")
    page.keyboard.press("2")
    page.wait_for_function(f"() => S.classId === {classes[1]['id']}")
    assert page.evaluate("() => document.activeElement.id") == "viewport"
    assert [c["name"] for c in api.get("/api/classes").json()["classes"]] == ["alpha", "gamma"]
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 4
def test_delete_class_says_what_goes_and_undo_is_not_wasted(page, one_image):
    server, api, image_id = one_image
    cls = serverkit.setup_classes(api, ("keep", "drop"))
    for items in ([{"class_id": cls[0]["id"], "x": 20.0, "y": 20.0}, {"class_id": cls[0]["id"], "x": 30.0, "y": 20.0}],
                  [{"class_id": cls[1]["id"], "x": 250.0, "y": 20.0}],
                  [{"kind": "scribble", "class_id": cls[1]["id"], "width": 6, "points": [[250, 60], [260, 90]]}]):
        assert api.post(f"/api/images/{image_id}/annotations", json={"items": items}).status_code == 201
    messages = []
    page.on("dialog", lambda d: (messages.append(d.message), d.accept()))
    open_page(page, server)
    page.wait_for_function("() => S.annotations.length === 4")
    page.locator("#class-list li:has-text('drop')").hover()
    page.click("#class-list li:has-text('drop') button[title='Delete']")
    page.wait_for_function("() => S.classes.length === 1 && S.annotations.length === 2")
    assert len(messages) == 1
    assert 'Delete class "drop" and its 1 point and 1 scribble' in messages[0], messages
    # one Ctrl+Z is one visible change: the two "keep" points go, not an edit of the deleted class
    page.locator("#viewport").focus()
    page.keyboard.press("Control+z")
    page.wait_for_function("() => S.annotations.length === 0", timeout=15000)
    assert api.get(f"/api/images/{image_id}/annotations").json()["annotations"] == []
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 9
def test_tool_brush_opacity_view_are_remembered_per_project(page, one_image):
    server, api, image_id = one_image
    cls, rev = trained(api, image_id, W, H)
    open_page(page, server)
    page.locator("#viewport").focus()
    page.keyboard.press("s")
    page.locator("#brush").fill("30")
    page.locator("#opacity").fill("70")
    page.select_option("#view-select", "uncertainty")
    page.click("#marks-toggle")
    page.locator("#brightness").fill("150")
    page.locator(f"#class-list li[data-id='{cls[0]['id']}'] button.eye").click()
    page.reload()
    page.wait_for_function("() => S.current && S.classes.length === 2")
    got = page.evaluate("() => ({tool: S.tool, brush: S.brush, opacity: S.opacity, view: S.view, marks: S.showMarks,"
                        " brightness: S.brightness, hidden: S.hidden})")
    assert got == {"tool": "scribble", "brush": 30, "opacity": 0.7, "view": "uncertainty", "marks": False,
                   "brightness": 1.5, "hidden": ["background"]}
    # and on screen
    assert page.locator(".tool.active").get_attribute("data-tool") == "scribble"
    assert page.input_value("#brush") == "30" and page.inner_text("#brush-val") == "30"
    assert page.input_value("#opacity") == "70"
    assert page.input_value("#view-select") == "uncertainty"
    assert page.locator(f"#class-list li[data-id='{cls[0]['id']}'] button.eye").get_attribute("aria-pressed") == "false"
    keys = page.evaluate("() => Object.keys(localStorage)")
    assert keys == [f"pointseg-prefs:{server.project.name}"]
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 10
def test_overlay_visibility_marks_legend_and_brightness(page, one_image):
    server, api, image_id = one_image
    cls, rev = trained(api, image_id, W, H)
    open_page(page, server)
    page.locator("#opacity").fill("100")
    wait_overlay(page, rev)
    left, right = (60, 120), (250, 130)
    bg, fg = _rgb(cls[0]["color"]), _rgb(cls[1]["color"])
    px = view_pixels(page, [left, right])
    assert px[0][:3] == bg and px[1][:3] == fg, px           # opaque overlay: each side in its class colour
    # hide the background class: its side shows the image, the other side keeps its colour
    page.locator(f"#class-list li[data-id='{cls[0]['id']}'] button.eye").click()
    page.wait_for_timeout(150)
    px = view_pixels(page, [left, right])
    assert px[0][:3] != bg and abs(px[0][0] - px[0][2]) < 20 and px[1][:3] == fg, px   # grey image pixel
    # the marks: drawn, then hidden with M (they cover tiny defects), then back
    point = screen_of(page, W * 0.2, 10.0)
    assert page.evaluate(MARK_ALPHA_JS, list(point)) > 0
    page.locator("#viewport").focus()
    page.keyboard.press("m")
    page.wait_for_timeout(100)
    assert page.evaluate(MARK_ALPHA_JS, list(point)) == 0
    page.keyboard.press("m")
    page.wait_for_timeout(100)
    assert page.evaluate(MARK_ALPHA_JS, list(point)) > 0
    # legends of the probability and uncertainty views
    assert page.locator("#legend").is_hidden()
    page.select_option("#view-select", "proba:1")
    wait_overlay(page, rev, "proba:1")
    assert page.locator("#legend").is_visible() and "P(stripes)" in page.inner_text("#legend")
    page.select_option("#view-select", "uncertainty")
    wait_overlay(page, rev, "uncertainty")
    assert "uncertain" in page.inner_text("#legend")
    # brightness and contrast change the image, not the overlay
    page.locator("#opacity").fill("0")
    page.wait_for_timeout(100)
    before = view_pixels(page, [left])[0]
    page.locator("#brightness").fill("200")
    page.wait_for_timeout(100)
    after = view_pixels(page, [left])[0]
    assert after[0] > before[0] + 60, (before, after)
    page.locator("#contrast").fill("300")
    page.wait_for_timeout(100)
    assert view_pixels(page, [left])[0] != after
    page.click("#adjust-reset")
    page.wait_for_timeout(100)
    assert view_pixels(page, [left])[0] == before
    assert real_errors(page) == []


def test_high_zoom_is_nearest_neighbour_without_tile_seams(page, make_server, tmp_path):
    """At 744 % every image pixel is a uniform square on screen, in the image and in the overlay, and the
    overlay shows no seam at the 256-px tile boundary."""
    w, h = 640, 300                       # the uniform left half spans x = 256
    write_images(tmp_path / "imgs", 1, h=h, w=w)
    server = make_server(images=[tmp_path / "imgs"])
    api = server.client()
    image_id = api.get("/api/images").json()["images"][0]["id"]
    cls, rev = trained(api, image_id, w, h)
    open_page(page, server)
    page.locator("#opacity").fill("0")
    wait_overlay(page, rev)
    # zoom to 7.44x around image pixel (256, 150)
    page.evaluate("""([x, y]) => { const r = document.querySelector('#viewport').getBoundingClientRect();
        S.vt.s = 7.44; S.vt.tx = r.width / 2 - x * 7.44; S.vt.ty = r.height / 2 - y * 7.44; }""", [256, 150])
    page.locator("#viewport").focus()
    page.mouse.move(5, 5)
    page.keyboard.press("[")              # any redraw: the brush key repaints marks; the view follows
    page.evaluate("() => { document.querySelector('#fit-btn'); }")
    page.evaluate("() => window.dispatchEvent(new Event('resize'))")
    page.wait_for_timeout(200)
    # image pixels: sample 5 x 5 screen pixels inside each of a few image pixels: all equal (no blur)
    blocks = page.evaluate("""(pts) => {
        const c = document.querySelector('#view'), g = c.getContext('2d'), k = window.devicePixelRatio || 1;
        return pts.map(([sx, sy]) => { const d = g.getImageData(Math.floor((sx - 2) * k), Math.floor((sy - 2) * k), 5, 5).data;
          const first = [d[0], d[1], d[2]]; let same = true;
          for (let p = 0; p < d.length; p += 4) if (d[p] !== first[0] || d[p+1] !== first[1] || d[p+2] !== first[2]) same = false;
          return {same, first}; }); }""", [list(screen_of(page, x, 150)) for x in (250, 251, 252, 253, 254, 255)])
    assert all(b["same"] for b in blocks), blocks
    assert len({tuple(b["first"]) for b in blocks}) > 1          # and neighbours differ: real pixels, not a blur
    # overlay at full opacity over the uniform background region: one colour across x = 256, no seam
    page.locator("#opacity").fill("100")
    page.wait_for_timeout(150)
    row = page.evaluate("""([y, x0, x1]) => { const c = document.querySelector('#view'), k = window.devicePixelRatio || 1;
        const d = c.getContext('2d').getImageData(Math.floor(x0 * k), Math.floor(y * k), Math.floor((x1 - x0) * k), 1).data;
        const out = new Set(); for (let p = 0; p < d.length; p += 4) out.add(`${d[p]},${d[p+1]},${d[p+2]},${d[p+3]}`);
        return [...out]; }""", [screen_of(page, 256, 150)[1], screen_of(page, 250, 150)[0], screen_of(page, 262, 150)[0]])
    bg = _rgb(cls[0]["color"])
    assert row == [f"{bg[0]},{bg[1]},{bg[2]},255"], row
    api.close()
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 11
def test_layout_at_1024_wide_has_no_overflow_and_one_line_rows(browser, make_server, tmp_path):
    folder = tmp_path / "imgs"
    files = write_images(folder, 3, h=H, w=W)
    files[0].rename(folder / "a_very_long_file_name_from_the_production_line_camera_07_2026-12-01.png")
    server = make_server(images=[folder])
    api = server.client()
    ids = [i["id"] for i in api.get("/api/images").json()["images"]]
    cls, rev = trained(api, ids[0], W, H, names=("background", "stripes", "a long class name for scratches"))
    context = browser.new_context(viewport={"width": 1024, "height": 768}, device_scale_factor=1)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    open_page(page, server, 3)
    page.wait_for_function("() => document.querySelector('#status-text').textContent.startsWith('Model r')",
                           timeout=60000)
    wait_overlay(page, rev)
    page.wait_for_timeout(300)
    boxes = page.evaluate("""() => {
      const box = (e) => e.getBoundingClientRect();
      const within = (inner, outer) => { const a = box(inner), b = box(outer);
        return a.left >= b.left - 0.5 && a.right <= b.right + 0.5; };
      const bar = document.querySelector('#infobar'), top = document.querySelector('.topbar');
      const status = document.querySelector('#status-text');
      const rows = [...document.querySelectorAll('#image-list li')];
      return {
        doc: document.documentElement.scrollWidth <= window.innerWidth,
        topbar: top.scrollWidth <= top.clientWidth,
        status_in_bar: within(status, document.querySelector('.status')),
        status_ellipsis: getComputedStyle(status).textOverflow,
        infobar: bar.scrollWidth <= bar.clientWidth,
        infobar_kids: [...bar.children].filter((k) => k.offsetParent !== null).every((k) => within(k, bar)),
        rows: rows.map((li) => ({h: box(li).height, name_h: box(li.querySelector('.name')).height,
                                  inside: [...li.children].filter((k) => k.offsetParent !== null).every((k) => within(k, li)),
                                  ellipsis: getComputedStyle(li.querySelector('.name')).textOverflow,
                                  clipped: li.querySelector('.name').scrollWidth > li.querySelector('.name').clientWidth})),
        panels: [...document.querySelectorAll('.panel, .center')].every((p) => p.scrollWidth <= p.clientWidth + 1),
      };
    }""")
    assert boxes["doc"] and boxes["topbar"] and boxes["status_in_bar"], boxes
    assert boxes["status_ellipsis"] == "ellipsis"
    assert boxes["infobar"] and boxes["infobar_kids"], boxes
    assert boxes["panels"], boxes
    line = 20
    for r in boxes["rows"]:
        assert r["name_h"] < 1.6 * line and r["h"] <= 52 and r["inside"] and r["ellipsis"] == "ellipsis", r
    assert boxes["rows"][0]["clipped"]            # the long name is cut with an ellipsis, not wrapped
    page.screenshot(path=str(tmp_path / "w1024.png"))
    context.close()
    api.close()
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 6
def test_server_down_shows_offline_keeps_clicks_and_sends_them_when_back(page, one_image, monkeypatch):
    server, api, image_id = one_image
    cls, rev = trained(api, image_id, W, H)
    open_page(page, server)
    wait_overlay(page, rev)
    page.locator("#viewport").focus()
    page.keyboard.press("2")
    server.kill9()                                   # the real process, gone
    page.wait_for_selector("#offline:not([hidden])", timeout=15000)
    assert "offline" in page.inner_text("#status-text").lower()
    click_image(page, 280, 60)
    click_image(page, 280, 180)
    page.wait_for_function("() => document.querySelector('#offline-text').textContent.includes('2 edits kept')")
    assert page.evaluate("() => S.pending.length") == 2          # still drawn, as pending
    page.wait_for_timeout(1500)
    assert page.locator(".toast").count() == 0                   # no "Failed to fetch" toasts
    # the same project on the same port, as a user restarts it
    port = server.port
    monkeypatch.setattr(serverkit, "free_port", lambda: port)
    server.start()
    page.wait_for_selector("#offline", state="hidden", timeout=30000)
    page.wait_for_function("() => S.pending.length === 0 && S.annotations.length === 10", timeout=30000)
    anns = api.get(f"/api/images/{image_id}/annotations").json()["annotations"]
    assert len(anns) == 10 and sum(a["class_id"] == cls[1]["id"] and a["x"] > 270 for a in anns) == 2
    page.wait_for_function("() => !/offline/i.test(document.querySelector('#status-text').textContent)")
    assert not any("Failed to fetch" in t for t in page.locator(".toast").all_inner_texts())
    assert not any("Failed to fetch" in e for e in page.errors)


# ---------------------------------------------------------------------------------------------- item 2
def test_badges_after_kill9_show_old_predictions_as_old(page, make_server, tmp_path):
    write_images(tmp_path / "imgs", 2, h=H, w=W)
    server = make_server(images=[tmp_path / "imgs"])
    api = server.client()
    ids = [i["id"] for i in api.get("/api/images").json()["images"]]
    cls, rev = trained(api, ids[0], W, H)
    import time
    deadline = time.monotonic() + 60
    while api.get("/api/model").json().get("status") != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.post("/api/predict-all", json={}).status_code == 202
    while api.get("/api/predict-all").json()["running"] and time.monotonic() < deadline + 60:
        time.sleep(0.2)
    assert all(i["prediction"]["status"] == "ok" for i in api.get("/api/images").json()["images"])
    # one more click changes the model: both predictions are now older than the annotations
    api.post(f"/api/images/{ids[0]}/annotations", json={"items": [{"class_id": cls[1]["id"], "x": 300.0, "y": 5.0}]})
    server.kill9()
    server.start()
    api = server.client()
    page.goto(server.url + "/")
    page.wait_for_selector("#image-list li >> nth=1")
    seen = page.evaluate("() => ({pred: document.querySelectorAll('#image-list .badge.pred').length,"
                         " old: document.querySelectorAll('#image-list .badge.stale').length, training: S.training})")
    assert seen["pred"] == 0 and seen["old"] == 2, seen
    page.wait_for_function("() => S.model && S.model.status === 'ok' && !S.training", timeout=60000)
    page.wait_for_timeout(600)
    assert page.locator("#image-list .badge.pred").count() == 0
    assert page.locator("#image-list .badge.stale").count() == 2
    # and thumbnails carry the stored predictions (item 10)
    page.wait_for_function("() => [...document.querySelectorAll('#image-list img.pred-thumb')]"
                           ".filter((i) => i.complete && i.naturalWidth > 0).length === 2")
    api.close()
    assert real_errors(page) == []


def _predicted_project(make_server, tmp_path, n: int, w: int = W, h: int = H):
    """n images, a model, every image predicted."""
    import time
    write_images(tmp_path / "imgs", n, h=h, w=w)
    server = make_server(images=[tmp_path / "imgs"])
    api = server.client()
    ids = [i["id"] for i in api.get("/api/images").json()["images"]]
    cls, rev = trained(api, ids[0], w, h)
    deadline = time.monotonic() + 90
    while api.get("/api/model").json().get("status") != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return server, api, ids, cls


def _wait_batch(api, timeout=120):
    import time
    deadline = time.monotonic() + timeout
    while api.get("/api/predict-all").json()["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return api.get("/api/predict-all").json()


# ---------------------------------------------------------------------------------------------- item 8
def test_downloads_are_named_as_the_server_names_them(page, make_server, tmp_path):
    server, api, ids, cls = _predicted_project(make_server, tmp_path, 1)
    assert api.post("/api/predict-all", json={}).status_code == 202
    _wait_batch(api)
    open_page(page, server)
    links = page.locator("#export-menu a[data-export]")
    names = []
    for k in range(links.count()):
        href = links.nth(k).get_attribute("href")
        r = api.get(href)
        assert r.status_code == 200, (href, r.text)
        want = r.headers["content-disposition"].split("filename=")[1].strip('"')
        page.click("#export-btn")
        with page.expect_download(timeout=120000) as dl:
            links.nth(k).click()
        assert dl.value.suggested_filename == want, (href, dl.value.suggested_filename, want)
        names.append(want)
    assert len(names) == 5
    assert len(set(names)) == 5 and "results-labels.zip" in names, names   # the two zips differ too
    assert real_errors(page) == []
    api.close()


# ---------------------------------------------------------------------------------------------- item 7
def test_predict_all_after_stop_shows_resumed_progress(page, make_server, tmp_path):
    server, api, ids, cls = _predicted_project(make_server, tmp_path, 8)
    open_page(page, server, 8)
    page.evaluate("""() => { window.batchTexts = []; const t = document.querySelector('#batch-text');
        new MutationObserver(() => window.batchTexts.push(t.textContent)).observe(t, {childList: true, characterData: true, subtree: true}); }""")
    page.click("#predict-all")
    page.wait_for_function("() => S.batch && S.batch.done >= 2", timeout=120000)
    page.click("#batch-cancel")
    page.wait_for_function("() => S.batch && !S.batch.running", timeout=60000)
    stopped = page.evaluate("() => S.batch")
    if not stopped["cancelled"]:
        pytest.skip("the run finished before Stop took effect")
    kept = stopped["done"]
    assert f"stopped at {kept} / 8" in page.inner_text("#batch-text")
    assert page.inner_text("#predict-all") == "Resume"
    page.click("#predict-all")
    page.wait_for_function("() => S.batch && S.batch.running === false && S.batch.done === S.batch.total"
                           " && !S.batch.cancelled", timeout=120000)
    after = page.evaluate("() => S.batch")
    texts = page.evaluate("() => window.batchTexts")
    resumed = texts[texts.index(next(t for t in texts if t.startswith("stopped"))) + 1:]
    # the finished images are not redone, the page says so, and progress never steps back
    skipped = after["skipped"]
    assert skipped >= kept, after
    counts = [int(t.split(" / ")[0]) for t in resumed if " / " in t and t[0].isdigit()]
    assert counts == sorted(counts), texts
    assert f"{skipped} already up to date" in page.inner_text("#batch-text")
    assert "8 / 8 done" in page.inner_text("#batch-text")
    assert page.inner_text("#predict-all") == "Predict all"
    assert real_errors(page) == []
    api.close()


# ---------------------------------------------------------------------------------------------- item 5
def test_background_class_is_shown_and_set_in_the_class_list(page, one_image):
    server, api, image_id = one_image
    cls = serverkit.setup_classes(api, ("surface", "defect"))
    open_page(page, server)
    page.wait_for_function("() => S.classes.length === 2")
    flag = lambda c: page.locator(f"#class-list li[data-id='{c['id']}'] .bg-flag")  # noqa: E731
    assert flag(cls[0]).get_attribute("aria-checked") == "true" and flag(cls[1]).get_attribute("aria-checked") == "false"
    assert flag(cls[0]).is_visible() and flag(cls[1]).is_hidden()         # shown on the background class
    page.locator(f"#class-list li[data-id='{cls[1]['id']}']").hover()
    flag(cls[1]).click()
    page.wait_for_function(f"() => S.classes.find((c) => c.id === {cls[1]['id']}).background === true")
    assert [c["background"] for c in api.get("/api/classes").json()["classes"]] == [False, True]
    assert flag(cls[1]).get_attribute("aria-checked") == "true"
    assert "defect" in page.inner_text("#model-info")
    # reordering does not move the background
    page.locator(f"#class-list li[data-id='{cls[1]['id']}']").hover()
    page.click(f"#class-list li[data-id='{cls[1]['id']}'] button[title='Move up']")
    page.wait_for_function("() => S.classes[0].name === 'defect'")
    assert [c["background"] for c in api.get("/api/classes").json()["classes"]] == [True, False]
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 12
def test_method_settings_panel_saves_retrains_and_refuses_bad_values(page, one_image):
    server, api, image_id = one_image
    cls, rev = trained(api, image_id, W, H)
    open_page(page, server)
    page.wait_for_selector("#settings-section:not([hidden]) #set-C")
    page.wait_for_function("() => S.model && S.model.status === 'ok' && !S.training", timeout=60000)
    model_rev = page.evaluate("() => S.model.rev")
    before = api.get("/api/settings").json()
    page.fill("#set-C", "0.5")
    page.press("#set-C", "Enter")
    page.wait_for_function("() => S.settings && S.settings.C === 0.5")
    assert api.get("/api/settings").json()["C"] == 0.5
    # the change retrains: a newer model arrives and the status line says so
    page.wait_for_function(f"() => S.model && S.model.status === 'ok' && S.model.rev > {model_rev} && !S.training",
                           timeout=60000)
    page.wait_for_function("() => /Saved/.test(document.querySelector('#settings-note').textContent)")
    page.select_option("#set-features", "deep" if before["features"] != "deep" else "hybrid")
    page.wait_for_function(f"() => S.settings.features !== '{before['features']}'")
    # a bad value: one line in the panel, nothing stored
    page.fill("#set-smoothing", "-3")
    page.press("#set-smoothing", "Enter")
    page.wait_for_selector("#settings-note.err")
    assert "smoothing" in page.inner_text("#settings-note").lower()
    assert api.get("/api/settings").json()["smoothing"] == before["smoothing"]
    assert page.input_value("#set-smoothing") == str(before["smoothing"])
    # another tab's change arrives through the event stream
    api.put("/api/settings", json={"min_region": 7})
    page.wait_for_function("() => document.querySelector('#set-min_region').value === '7'")
    assert real_errors(page) == []


# ---------------------------------------------------------------------------------------------- item 10
def test_features_of_a_large_image_show_progress(page, make_server, tmp_path):
    """While a large image's features compute, the hint shows a bar and the seconds spent; from the second
    image on, against an estimate from this server's measured speed."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    big = []
    for k in range(2):
        p = tmp_path / f"big_{k}.png"
        Image.fromarray(rng.integers(0, 255, (720, 960, 3), dtype=np.uint8)).save(p)
        big.append(p)
    server = make_server()
    api = server.client()
    serverkit.setup_classes(api, ("a", "b"))
    page.goto(server.url + "/")
    page.wait_for_selector("#empty:not([hidden])")
    page.set_input_files("#upload-input", [str(big[0])])
    page.wait_for_selector("#hint-progress:not([hidden])", timeout=30000)
    assert "Computing features for this image…" in page.inner_text("#hint-text")
    page.wait_for_function("() => /\\d+\\.\\d s/.test(document.querySelector('#hint-text').textContent)")
    page.wait_for_function("() => S.featuresReady[S.currentId] === true", timeout=120000)
    assert page.locator("#hint-progress").is_hidden()
    assert page.evaluate("() => S.msPerPixel") > 0
    page.set_input_files("#upload-input", [str(big[1])])
    page.wait_for_selector("#image-list li >> nth=1")
    second = [i["id"] for i in api.get("/api/images").json()["images"] if i["name"] == "big_1.png"][0]
    page.click(f"#image-list li[data-id='{second}']")
    page.wait_for_function(f"() => S.current && S.current.id === {second}")
    if page.evaluate("() => S.featuresReady[S.currentId]"):
        pytest.skip("the server had this image's features before it was opened")
    page.wait_for_function("() => /of about \\d+\\.\\d s/.test(document.querySelector('#hint-text').textContent)")
    width = page.evaluate("() => parseFloat(document.querySelector('#hint-bar').style.width)")
    assert 0 <= width <= 95
    page.wait_for_function("() => S.featuresReady[S.currentId] === true", timeout=120000)
    assert real_errors(page) == []
    api.close()


# ---------------------------------------------------------------------------------------------- item 2 (failed)
def test_unreadable_image_shows_a_failed_badge_with_its_reason(page, make_server, tmp_path):
    server, api, ids, cls = _predicted_project(make_server, tmp_path, 2)
    broken = tmp_path / "imgs" / "part_01.png"
    broken.write_bytes(b"this is not a PNG any more")
    assert api.post("/api/predict-all", json={}).status_code == 202
    _wait_batch(api)
    entry = next(i for i in api.get("/api/images").json()["images"] if i["name"] == "part_01.png")
    assert entry["status"] == "failed", entry
    open_page(page, server, 2)
    row = page.locator(f"#image-list li[data-id='{entry['id']}']")
    badge = row.locator(".badge.fail")
    assert badge.inner_text() == "unreadable"
    assert entry["error"] and badge.get_attribute("title") == entry["error"]
    assert row.locator(".badge.pred").count() == 0 and row.locator("img.pred-thumb").count() == 0
    api.close()
