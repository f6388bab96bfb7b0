"""The storefront demo page (/store) in a real browser (Debian's headless Chromium driven by Playwright)
against a real API server over its own small shop of real product photos.

The page is checked through what a shopper sees and through what reached Redis: the events it sent
and the profile it forgot. Its screenshot goes to ``test-artifacts/store.png``.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from indexer.embedded_redis import EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import read_catalog
from recommender.app import create_app
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from tests.browser import ARTIFACTS, serving, watch_errors
from tests.conftest import demo_rows, write_manifest

#: Six priced products from each of five categories: enough for a grid with a second page and for
#: "similar" rows that stay within a category.
SHOP = ("fish", "tool", "animals_birds", "household_object", "plants_flowers")
PER_CATEGORY = 6
GRID_PAGE = 24  # store.js's PAGE
ROW = 8  # store.js's ROW
PERSONAL = {"content", "collaborative", "sequence"}  # the reasons' sources that come from the user's own history


@pytest.fixture(scope="module")
def shop(redis_server: EmbeddedRedis, tagger: Tagger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A catalog of its own: the page's events move popularity, which other modules' catalogs must not see."""
    rows = [r for category in SHOP for r in [r for r in demo_rows() if r["category"] == category][:PER_CATEGORY]]
    directory = tmp_path_factory.mktemp("shop")
    settings = Settings(redis_url=redis_server.url, data_dir=directory / "data",
                        key_prefix=f"shop-{uuid.uuid4().hex[:8]}")
    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    ingest(read_catalog(write_manifest(rows, directory)), settings, store, tagger=tagger, progress=False)
    yield settings
    store.clear()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def store(shop: Settings) -> Store:
    return Store.from_url(shop.redis_url_or_default, shop.key_prefix)


def refreshes(page: Page) -> int:
    return int(page.locator("#for-you").get_attribute("data-refresh") or 0)


def wait_for_for_you(page: Page, after: int, user: str) -> list[str]:
    """Wait for a "for you" answer asked after refresh number ``after``, for ``user``; its reason lines."""
    page.wait_for_function(
        """([after, user]) => { const row = document.querySelector('#for-you');
           return row.dataset.state === 'ready' && Number(row.dataset.refresh) > after
             && row.dataset.user === user; }""",
        arg=[after, user])
    return page.locator("#for-you .card .reason").all_inner_texts()


def card_ids(page: Page, row: str) -> list[str]:
    return page.locator(f"{row} .card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def personal(page: Page) -> list[str]:
    """The "for you" cards that the user's own history brought, by their reasons' source."""
    return page.locator("#for-you .card").evaluate_all(
        f"cards => cards.filter(c => {sorted(PERSONAL)}.includes(c.dataset.source)).map(c => c.dataset.id)")


def names(reasons: list[str], title: str) -> bool:
    """Whether a reason line says the user's own event on ``title`` brought it ("because you looked at X")."""
    return any(r.startswith("because you") and title in r for r in reasons)


def event_types(store: Store, user: str) -> list[tuple[str, str]]:
    """The user's stored events, oldest first, as (type, item)."""
    return [(e["type"], e["item"]) for e in reversed(store.users.events(user))]


def test_grid_product_page_events_for_you_users_and_forget(shop: Settings, store: Store, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = watch_errors(page)
    with serving(shop) as url:
        page.goto(f"{url}/store")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        expect(page.locator("body")).to_have_attribute("data-user", "ana")  # the first demo shopper by default

        # the grid: a page of products with photos, titles, categories and prices, then the rest
        expect(page.locator("#grid .card")).to_have_count(GRID_PAGE)
        expect(page.locator("#catalog-count")).to_have_text(f"({len(SHOP) * PER_CATEGORY})")
        first = page.locator("#grid .card").first
        expect(first.locator(".title")).to_have_text("Fish1")
        expect(first.locator(".meta")).to_have_text("fish · 8.95")
        page.wait_for_function("document.querySelector('#grid .card img').naturalWidth > 0")
        page.click("#more")
        expect(page.locator("#grid .card")).to_have_count(len(SHOP) * PER_CATEGORY)
        expect(page.locator("#more")).to_be_hidden()

        # a new shopper's "for you" says why on every card, and nothing of theirs brought any
        reasons = wait_for_for_you(page, 0, "ana")
        assert len(reasons) == page.locator("#for-you .card").count() == ROW and all(reasons)
        assert personal(page) == []
        page.wait_for_function("[...document.querySelectorAll('#grid .card img')].every(i => i.complete)")
        page.evaluate("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "store-grid.png"))

        # a product page: its details, its similar items; the click is an event and "for you" follows it
        fish = page.locator("#grid .card").nth(2)
        fish_id, fish_title = fish.get_attribute("data-id"), fish.locator(".title").inner_text()
        before = refreshes(page)
        fish.locator("a").click()
        expect(page.locator("#product")).to_be_visible()
        expect(page.locator("#catalog")).to_be_hidden()
        expect(page.locator("#product-title")).to_have_text(fish_title)
        expect(page.locator("#product-price")).not_to_be_empty()
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        similar = card_ids(page, "#similar")
        assert len(similar) == ROW and fish_id not in similar
        assert any(i.startswith("fish-") for i in similar[:3]), similar  # the photos' neighbours are fish
        assert page.locator("#similar .card .reason").count() == ROW  # shared tags or topics, on every card
        reasons = wait_for_for_you(page, before, "ana")
        assert event_types(store, "ana") == [("click", fish_id)]
        assert names(reasons, fish_title), reasons

        # "customers also viewed", each with its reason (no one else has viewed it yet: content fills in)
        expect(page.locator("#also-block")).to_be_visible()
        expect(page.locator("#also")).to_have_attribute("data-state", "ready")
        also = card_ids(page, "#also")
        assert also and fish_id not in also
        assert page.locator("#also .card .reason").count() == len(also)

        # add to cart: an add_to_cart event, the cart counts it, "for you" is asked again
        before = refreshes(page)
        page.click("#add-to-cart")
        expect(page.locator("#cart")).to_have_text("cart: 1")
        reasons = wait_for_for_you(page, before, "ana")
        assert event_types(store, "ana") == [("click", fish_id), ("add_to_cart", fish_id)]
        assert len(reasons) == page.locator("#for-you .card").count() == ROW and all(reasons)
        assert personal(page) and names(reasons, fish_title), reasons
        assert fish_id not in card_ids(page, "#for-you")  # on screen, and in the cart: not recommended again
        ana_row = card_ids(page, "#for-you")
        page.wait_for_timeout(300)  # let the thumbnails arrive for the screenshot
        page.screenshot(path=str(ARTIFACTS / "store.png"), full_page=True)

        # a similar item's card opens its own page, and that click is recorded too
        other = similar[0]
        before = refreshes(page)
        page.locator(f"#similar .card[data-id='{other}'] a").click()
        expect(page.locator("#product-title")).not_to_have_text(fish_title)
        wait_for_for_you(page, before, "ana")
        assert event_types(store, "ana")[-1] == ("click", other)

        # another shopper: their own (empty) profile, so their own row and cart
        before = refreshes(page)
        page.click("#demo-users button[data-user=ben]")
        expect(page.locator("#demo-users button[data-user=ben]")).to_have_attribute("aria-pressed", "true")
        reasons = wait_for_for_you(page, before, "ben")
        assert reasons and personal(page) == [] and not names(reasons, fish_title), reasons
        assert card_ids(page, "#for-you") != ana_row
        expect(page.locator("#cart")).to_have_text("cart: 0")
        assert store.users.events("ben") == []

        before = refreshes(page)  # any user id, typed
        page.fill("#user", "shopper-42")
        page.press("#user", "Enter")
        wait_for_for_you(page, before, "shopper-42")
        expect(page.locator("#for-you-user")).to_have_text("shopper-42")

        # back to ana (kept across reloads), then "forget me": her events are gone, and her row is a stranger's
        page.click("#demo-users button[data-user=ana]")
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-user", "ana")
        wait_for_for_you(page, 0, "ana")
        assert personal(page)

        # "not interested": a dismiss event, and the item leaves her row
        dismissed = card_ids(page, "#for-you")[0]
        before = refreshes(page)
        page.locator(f"#for-you .card[data-id='{dismissed}'] .dismiss").click()
        wait_for_for_you(page, before, "ana")
        assert event_types(store, "ana")[-1] == ("dismiss", dismissed)
        assert dismissed not in card_ids(page, "#for-you")
        before = refreshes(page)
        page.click("#forget")
        expect(page.locator("#notice")).to_have_text("Forgot ana: their events and profile are gone.")
        reasons = wait_for_for_you(page, before, "ana")
        assert store.users.events("ana") == []
        assert reasons and personal(page) == [], reasons

        # the two demo pages link to each other
        page.click("header a.page-link")
        expect(page).to_have_url(re.compile(rf"^{re.escape(url)}/map(#\w+)?$"))
        expect(page.locator("header a.page-link")).to_have_attribute("href", "/store")
    assert errors == []


def test_with_api_keys_the_store_asks_for_a_client_key(shop: Settings, store: Store, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 900, "height": 800})
    errors = watch_errors(page)
    with serving(shop.with_(client_keys=("client-key",), admin_keys=("admin-key",))) as url:
        page.goto(f"{url}/store")
        expect(page.locator("body")).to_have_attribute("data-state", "key")
        expect(page.locator("#key-form")).to_be_visible()
        page.fill("#key", "client-key")
        page.click("#key-form button")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        expect(page.locator("#grid .card")).to_have_count(GRID_PAGE)
        page.wait_for_function("document.querySelector('#grid .card img').naturalWidth > 0")  # fetched with the key
        wait_for_for_you(page, 0, "ana")

        page.reload()  # the key is kept for the tab
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        page.locator("#grid .card a").first.click()
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        page.wait_for_function("document.querySelector('#product-photo').naturalWidth > 0")
        assert event_types(store, "ana")[-1][0] == "click"
        page.click("#forget")
        expect(page.locator("#notice")).to_contain_text("Forgot ana")
        assert store.users.events("ana") == []
    assert errors == []


def test_an_api_without_also_or_dismiss_gets_neither_row_nor_button(shop: Settings, browser: Browser) -> None:
    """The page reads what the API offers from its description, so an older API costs no 404s and no errors.
    On a phone-sized screen, the rows scroll sideways and the grid keeps two columns."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors = watch_errors(page)

    def older(route: Route) -> None:
        response = route.fetch()
        spec = response.json()
        del spec["paths"]["/v1/items/{item_id}/also"]
        spec["components"]["schemas"]["Event"]["properties"]["type"]["enum"].remove("dismiss")
        route.fulfill(response=response, json=spec)

    with serving(shop) as url:
        page.route("**/openapi.json", older)
        page.goto(f"{url}/store")
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        wait_for_for_you(page, 0, "ana")
        expect(page.locator("#for-you .card")).to_have_count(ROW)
        expect(page.locator("#for-you .dismiss")).to_have_count(0)
        page.locator("#grid .card a").first.click()
        expect(page.locator("#similar")).to_have_attribute("data-state", "ready")
        expect(page.locator("#also-block")).to_be_hidden()
        page.wait_for_timeout(300)  # the thumbnails, for the screenshot
        page.screenshot(path=str(ARTIFACTS / "store-narrow.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
        page.click("#forget")
        expect(page.locator("#notice")).to_contain_text("Forgot ana")
    assert errors == []


def test_the_catalog_listing_pages_through_every_served_item(shop: Settings, store: Store) -> None:
    client = create_app(shop).test_client()
    pages = [client.get(f"/v1/items?limit=7&offset={offset}").get_json() for offset in range(0, 36, 7)]
    listed = [item["id"] for page in pages for item in page["items"]]
    assert sorted(listed) == sorted(store.items.ids()) and len(set(listed)) == len(SHOP) * PER_CATEGORY
    assert all(page["total"] == len(listed) for page in pages) and pages[-1]["items"] == []
    first = pages[0]["items"][0]
    assert first["photo"] is True and first["price"] == 8.95 and first["topics"]
    assert client.get("/v1/items?limit=101").status_code == 400
