"""/docs and /redoc in a real browser that can reach nothing but this machine, as on an air-gapped cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, expect, sync_playwright

from tests.api.test_embeddings import LiveServer
from tests.ui.test_dashboard import CHROMIUM

# ReDoc's "API docs by Redocly" logo: when it cannot load, ReDoc leaves it out (its onError), nothing else is missing
LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@contextmanager
def offline_page(app) -> Iterator[tuple[str, Page]]:  # noqa: ANN001 - the FastAPI app
    """A live server for ``app`` and a headless Chromium page whose requests anywhere but loopback fail."""
    assert CHROMIUM, "chromium is not installed; `make test` installs it (.ci/browser.sh)"
    outside: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            if route.request.url != LOGO:
                outside.append(route.request.url)
            route.abort("internetdisconnected")

    with LiveServer(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.route("**/*", loopback_only)
            yield base, page
            assert outside == [], f"the page asked for files from elsewhere: {outside}"
        finally:
            browser.close()


def test_swagger_ui_works_offline_and_tries_a_route_with_a_key(client, auth) -> None:
    """Before, /docs loaded Swagger UI from cdn.jsdelivr.net: offline, a blank page."""
    key = auth["Authorization"].removeprefix("Bearer ")
    with offline_page(client.app) as (base, page):
        page.goto(f"{base}/docs")
        embeddings = page.locator(".opblock", has_text="/v1/embeddings").first
        expect(embeddings).to_be_visible(timeout=30_000)
        paths = client.app.openapi()["paths"].values()
        under_tags = sum(len(operation["tags"]) for methods in paths for operation in methods.values())
        expect(page.locator(".opblock")).to_have_count(under_tags)  # every route, once under each of its tags
        expect(page.locator(".errors-wrapper")).to_have_count(0)  # the OpenAPI 3.1 schema read without complaint

        page.click("button.authorize")
        page.fill(".modal-ux input", key)
        page.click(".modal-ux button.authorize")
        page.click(".modal-ux button.btn-done")
        listing = page.locator(".opblock-get", has_text="/v1/models").first
        listing.locator(".opblock-summary").first.click()
        listing.locator("button.try-out__btn").click()
        listing.locator("button.execute").click()
        expect(listing.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")
        expect(listing.locator(".curl-command")).to_contain_text(f"Authorization: Bearer {key}")


def test_redoc_works_offline(client) -> None:
    with offline_page(client.app) as (base, page):
        page.goto(f"{base}/redoc")
        expect(page.locator("h1", has_text="embedtrain")).to_be_visible(timeout=30_000)
        expect(page.locator("h2", has_text="Create embeddings").first).to_be_attached()
        expect(page.locator("img[alt='redocly logo']")).to_have_count(0)


def test_the_reference_pages_may_not_be_framed(client) -> None:
    """ "Try it out" sends requests with the key typed into it: another site may not frame the page to lead clicks."""
    for path in ("/docs", "/redoc"):
        answer = client.get(path)
        assert answer.status_code == 200 and "cdn." not in answer.text, path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'", path
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
