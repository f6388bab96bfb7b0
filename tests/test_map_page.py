"""The map page in a real browser (Debian's headless Chromium driven by Playwright) against a real API server.

Screenshots and timings go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from indexer.projection import summarize
from recommender.catalog_map import REPRESENTATIONS, CatalogMap, Layout
from recommender.index import TopicIndex
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.versions import TOPICS, VersionStore
from tests.browser import ARTIFACTS, serving, watch_errors
from tests.conftest import DEMO, sample_rows

SYNTHETIC_ITEMS = 50_000
INTERACTIVE_WITHIN = 3.0  # seconds from navigation to a hover that answers


def hover(page: Page, item_id: str) -> None:
    position = page.evaluate("(id) => window.vistasMap.screenPosition(id)", item_id)
    assert position is not None, f"{item_id} is not on the map"
    page.mouse.move(position["x"], position["y"])


def save_artifact(name: str, content: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(content, indent=2))


def test_map_of_real_photos_switch_hover_click_zoom(indexed: Settings, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = watch_errors(page)
    with serving(indexed) as url:
        page.goto(f"{url}/")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        expect(page.locator("#summary")).to_contain_text("silhouette")
        expect(page.locator("#status")).to_contain_text(f"{len(sample_rows())} items")
        assert page.locator("#legend li").count() >= 5

        for representation in REPRESENTATIONS:  # the switch
            page.click(f"#representations button[data-representation={representation}]")
            expect(page.locator("body")).to_have_attribute("data-representation", representation)
            expect(page.locator("body")).to_have_attribute("data-state", "ready")
            expect(page.locator(f"button[data-representation={representation}]")).to_have_attribute(
                "aria-pressed", "true")
            assert page.evaluate("window.vistasMap.count") == len(sample_rows())
        assert page.url.endswith("#feature_topics")

        hover(page, "landmark-eiffeltower")  # hover: photo, title, top tags and topics
        tooltip = page.locator("#tooltip")
        expect(tooltip).to_be_visible()
        expect(tooltip.locator(".title")).to_have_text("Eiffel Tower")
        expect(tooltip.locator(".tags")).to_contain_text("bell tower")
        expect(tooltip.locator(".topics")).to_contain_text("topics: ")
        page.wait_for_function("document.querySelector('#tooltip img').naturalWidth > 0")

        page.mouse.down()  # click: the item and its similar items
        page.mouse.up()
        expect(page.locator("#detail-title")).to_have_text("Eiffel Tower")
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        assert page.locator("#similar li").count() == 10
        expect(page.locator("#similar li[data-id='landmark-eiffeltower_2']")).to_have_count(1)
        page.wait_for_timeout(300)  # let the thumbnails of the similar items arrive for the screenshot
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map-page.png"))

        def spread() -> float:
            a, b = (page.evaluate("(id) => window.vistasMap.screenPosition(id)", i)
                    for i in ("landmark-eiffeltower", "landmark-tajmahal"))
            return float(np.hypot(a["x"] - b["x"], a["y"] - b["y"]))

        before = spread()
        page.mouse.wheel(0, -600)  # zoom in around the pointer
        page.wait_for_timeout(100)
        assert spread() > 1.5 * before
        page.mouse.move(200, 200)
        page.mouse.down()  # pan
        page.mouse.move(300, 260, steps=5)
        page.mouse.up()
        page.click("#reset")
        page.wait_for_timeout(100)
        assert spread() == pytest.approx(before, rel=0.01)

        page.select_option("#colour-by", "own")  # colour by the map's own topics
        expect(page.locator("#legend-title")).to_have_text("Topics of NMF on features")
        page.screenshot(path=str(ARTIFACTS / "map-page-own-topics.png"))
    assert errors == []


def test_with_api_keys_the_page_asks_for_a_client_key(indexed: Settings, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = watch_errors(page)
    with serving(indexed.with_(client_keys=("client-key",), admin_keys=("admin-key",))) as url:
        page.goto(f"{url}/")
        expect(page.locator("body")).to_have_attribute("data-state", "key")
        page.fill("#key", "wrong-key")
        page.click("#key-form button")
        expect(page.locator("#key-error")).to_have_text("the API key is not valid")
        for _ in range(100):  # the map and the topics are asked for together: both refusals are logged
            if len(errors) >= 2:
                break
            page.wait_for_timeout(50)
        assert len(errors) == 2 and all("401" in e for e in errors)  # the refused requests, and nothing else
        errors.clear()

        page.fill("#key", "client-key")
        page.click("#key-form button")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        hover(page, "landmark-tajmahal")
        expect(page.locator("#tooltip .title")).to_have_text("Taj Mahal")
        expect(page.locator("#tooltip .tags")).to_contain_text("tags: ")
        page.wait_for_function("document.querySelector('#tooltip img').naturalWidth > 0")  # fetched with the key
        page.mouse.down()
        page.mouse.up()
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        assert page.locator("#similar li").count() == 10
    assert errors == []


def synthetic_version(settings: Settings, store: Store, n: int) -> list[Item]:
    """Version 1 of ``n`` items in 30 clusters, written through the same classes the indexer uses.

    Only the first items (real photos, on a ring around the clusters so a
    pointer finds them, and similar to each other) are in Redis; the rest
    exist in the index and the map.
    """
    rng = np.random.default_rng(0)
    topics = rng.integers(0, 30, n)
    centres = rng.normal(0, 40, (30, 2))
    xy = (centres[topics] + rng.normal(0, 4, (n, 2))).astype(np.float32)
    real = [Item(id=f"syn-{i:05d}", title=row["title"], image=str(DEMO / row["image"]))
            for i, row in enumerate(sample_rows()[:12])]
    angles = np.linspace(0, 2 * np.pi, len(real), endpoint=False)
    xy[:len(real)] = np.column_stack([np.cos(angles), np.sin(angles)]) * 160
    vectors = np.abs(rng.normal(0, 0.05, (n, 30))).astype(np.float32)
    vectors[np.arange(n), topics] = 1.0
    vectors[:len(real)] += 1.0  # the real items lean on every topic: each other's nearest neighbours
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for item in real:
        store.items.put(item)  # numbered 1, 2, ... in a fresh key prefix, as the index below assumes
        store.items.mark_indexed(item.id, [("synthetic", 1.0)], vectors[item.num - 1], 1, None)
    ids = [item.id for item in real] + [f"syn-{i:05d}" for i in range(len(real), n)]
    nums = list(range(1, n + 1))
    index = TopicIndex(30)
    index.upsert(np.array(nums), ids, vectors)
    layouts = {r: Layout(xy @ np.array([[np.cos(k), -np.sin(k)], [np.sin(k), np.cos(k)]], dtype=np.float32),
                         None if r == "features" else topics, None if r == "features" else
                         [f"own topic {t}" for t in range(30)])
               for k, r in enumerate(REPRESENTATIONS)}
    titles = [item.title for item in real] + [f"Synthetic item {i}" for i in range(len(real), n)]
    photos = [True] * len(real) + [False] * (n - len(real))
    summary = summarize(layouts, topics, {r: "t-SNE" for r in REPRESENTATIONS})
    catalog_map = CatalogMap(ids, nums, titles, photos, topics.tolist(), layouts, summary)
    files = VersionStore(settings.data_dir)
    with files.create(1, {"items": n, "changes_from": store.changes.last_id()}) as directory:
        index.save(directory, store.items.summaries)  # the real items: the synthetic ones are not in Redis
        catalog_map.save(directory)
        names = [{"id": t, "name": f"topic {t}", "top_tags": [{"tag": f"tag {t}", "weight": 1.0}]} for t in range(30)]
        (directory / TOPICS).write_text(json.dumps(names))
    store.versions.set_current(1)
    return real


def test_50000_points_are_interactive_within_3_seconds(settings: Settings, store: Store, browser: Browser) -> None:
    real = synthetic_version(settings, store, SYNTHETIC_ITEMS)
    target = real[3]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = watch_errors(page)
    with serving(settings) as url:
        started = time.monotonic()
        response = page.goto(f"{url}/#tag_topics")
        assert response is not None and response.ok
        expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=10_000)
        hover(page, target.id)
        expect(page.locator("#tooltip .title")).to_have_text(target.title, timeout=10_000)
        interactive = time.monotonic() - started
        browser_clock = page.evaluate("performance.now()") / 1000
        assert page.evaluate("window.vistasMap.count") == SYNTHETIC_ITEMS

        expect(page.locator("#tooltip .tags")).to_contain_text("synthetic")
        page.mouse.down()
        page.mouse.up()
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        assert page.locator("#similar li").count() == 10

        started = time.monotonic()  # a switch redraws 50,000 points and rebuilds the hit-testing grid
        page.click("button[data-representation=feature_topics]")
        expect(page.locator("body")).to_have_attribute("data-representation", "feature_topics")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        hover(page, real[5].id)
        expect(page.locator("#tooltip .title")).to_have_text(real[5].title)
        switched = time.monotonic() - started
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map-50k.png"))

    timings = {"points": SYNTHETIC_ITEMS, "load_to_hover_answer_s": round(interactive, 3),
               "browser_clock_s": round(browser_clock, 3), "switch_to_hover_answer_s": round(switched, 3)}
    save_artifact("map-50k-timings.json", timings)
    print(timings)
    assert errors == []
    assert interactive < INTERACTIVE_WITHIN, timings
