"""The live dashboard in headless Chromium, against the app served by Hypercorn."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from demo_app import Config, create_app, serve

pytestmark = [pytest.mark.broker, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def base_url(config: Config) -> AsyncIterator[str]:
    """The app served by Hypercorn on a free localhost port, for the length of the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Listening already: the browser's first connection waits in the backlog until
    # Hypercorn accepts it, so there is nothing to poll for.
    sock.listen(16)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve(create_app(config), config, bind=f"fd://{sock.detach()}", shutdown_trigger=stop.wait)
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


def latest_accepted(n: int) -> re.Pattern[str]:
    """``#chart``'s ``data-latest`` (JSON) once its ``accepted`` is ``n``. Matched as text:
    the page's Content-Security-Policy forbids the eval a JS predicate would need."""
    return re.compile(rf'"accepted":{n}[,}}]')


async def test_dashboard_shows_the_state_and_charts_a_publish(
    base_url: str, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(f"{base_url}/?interval=200")

    await expect(page.locator("#state")).to_have_text("connected", timeout=20_000)
    await expect(page.locator("#v-accepted")).to_have_text("0", timeout=10_000)
    chart = page.locator("#chart")
    await expect(chart).to_have_attribute("data-latest", latest_accepted(0), timeout=10_000)
    line = page.locator('#chart polyline[data-series="accepted"]')
    points_before = await line.get_attribute("points")

    await page.click("#publish")
    await expect(page.locator("#publish-result")).to_contain_text("202", timeout=10_000)

    # The next polls bring the new count into the cards and the chart.
    await expect(chart).to_have_attribute("data-latest", latest_accepted(1), timeout=15_000)
    await expect(page.locator("#v-accepted")).to_have_text("1", timeout=10_000)
    await expect(page.locator("#v-confirmed")).to_have_text("1", timeout=15_000)
    points_after = await line.get_attribute("points")
    assert points_after and points_after != points_before
    latest = json.loads(await page.locator("#chart").get_attribute("data-latest") or "{}")
    assert latest["accepted"] == 1
    assert int(await page.locator("#chart").get_attribute("data-points") or 0) >= 2
    await page.close()
