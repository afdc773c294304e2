"""A real browser walks the journey: Playwright driving Debian's Chromium (CONTEXT.md §6).

Demo portal → the Blue Button (pressed with the keyboard) → the stand-in DigiD → the consent
page → back at the portal → downloads: the JSON, and the certified PDF that the portal fetches
from the gateway on the click → each file verified. A screenshot of each step
is kept under test-output/browser/ (the path is printed), and axe-core, run in that browser,
must report no WCAG 2.1 A or AA violation on the button, login and consent pages. Pages run
under their real Content-Security-Policy; any CSP violation fails the test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import ConsoleMessage, Page, async_playwright

from gateway.demo.journey import gateway_trust
from gateway.documents.service import document_trust
from gateway.documents.verify import verify_file
from gateway.pki import DevPki
from gateway.verify import verify_download
from tests.portalstack import PortalStack, start_portal_stack, stop_portal_stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "browser"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CITIZEN = "999990020"


@pytest.fixture
async def world(state_dir: Path, pki: DevPki, tmp_path: Path) -> AsyncIterator[PortalStack]:
    made = await start_portal_stack(state_dir, pki, tmp_path / "policies")
    yield made
    await stop_portal_stack(made)


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


async def no_wcag_violations(page: Page, what: str) -> None:
    results = await Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_21_AA}})
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run deploy/dev/system-packages.sh")
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    with capsys.disabled():
        print(f"\nbrowser screenshots: {OUTPUT}")
    return OUTPUT


async def test_citizen_journey_in_a_real_browser(world: PortalStack, output: Path) -> None:
    csp_violations: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            csp_violations.append(message.text)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = await browser.new_context(accept_downloads=True, locale="nl-NL")
        page = await context.new_page()
        page.on("console", console)

        # 1. The portal's intake page with the button.
        await page.goto(f"{world.portal_url}/schuldhulp")
        button = page.get_by_role("button", name="Download mijn gegevens")
        await button.wait_for()
        await shot(page, "1-portaal-knop")
        await no_wcag_violations(page, "the portal page with the button")
        # Keyboard only: Tab reaches the button, Enter presses it.
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await button.evaluate("b => b.getRootNode().activeElement === b"):
                break
        else:
            pytest.fail("the Blue Button cannot be reached with the Tab key")
        await page.keyboard.press("Enter")

        # 2. The stand-in DigiD: pick the test citizen and a level.
        await page.wait_for_url(re.compile(r".*/authorize\?.*"))
        await page.locator(f'input[name="bsn"][value="{CITIZEN}"]').wait_for()
        await shot(page, "2-digid-inloggen")
        await no_wcag_violations(page, "the DigiD login page")
        await page.locator(f'input[name="bsn"][value="{CITIZEN}"]').check()
        await page.locator('input[name="niveau"][value="substantieel"]').check()
        await page.get_by_role("button", name="Inloggen").click()

        # 3. The consent page: purpose, legal basis, organisations.
        await page.wait_for_url(re.compile(r".*/toestemming/.*"))
        await page.get_by_role("heading", name="Toestemming geven").wait_for()
        await shot(page, "3-toestemming")
        await no_wcag_violations(page, "the consent page")
        assert await page.get_by_label("CAK").is_checked()
        await page.get_by_role("link", name=re.compile("English")).click()
        await page.get_by_role("heading", name="Give consent").wait_for()
        await shot(page, "3b-consent-english")
        await no_wcag_violations(page, "the consent page in English")
        await page.get_by_role("button", name="Consent and share data").click()

        # 4. Back at the portal: the overview and the downloads.
        await page.wait_for_url(re.compile(r".*/schuldhulp/resultaat.*"))
        await page.get_by_role("heading", name="Uw gegevens zijn opgehaald").wait_for()
        await shot(page, "4-resultaat")
        await no_wcag_violations(page, "the portal's result page")
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Download als JSON-bestand").click()
        download = await download_info.value
        saved = OUTPUT / "bundel.json"
        await download.save_as(saved)
        # The certified PDF: the portal's back-end fetches it from the gateway on the click.
        async with page.expect_download(timeout=60_000) as download_info:
            await page.get_by_role("button", name="Download als PDF (gewaarmerkt)").click()
        pdf_download = await download_info.value
        assert pdf_download.suggested_filename == "blauwe-knop-bundel.pdf"
        pdf = OUTPUT / "bundel.pdf"
        await pdf_download.save_as(pdf)
        assert page.url.endswith("/schuldhulp/resultaat?lang=nl"), "a download, not a new page"

        # 5. An error at the gateway is a page too (Dutch first, English below), never a redirect.
        await page.goto(f"{world.url}/authorize?client_id=test-portaal")
        await page.get_by_role("heading", name="Er ging iets mis").wait_for()
        await shot(page, "5-foutpagina")
        await no_wcag_violations(page, "the gateway's error page")
        await browser.close()

    verdict = verify_download(saved.read_bytes(), await gateway_trust(world.session, world.url))
    assert verdict.document["bsn"] == CITIZEN
    assert {b["status"] for b in verdict.document["bronnen"]} == {"ok"}
    certified = await asyncio.to_thread(
        verify_file, pdf.read_bytes(), document_trust(world.stack.settings)
    )
    assert certified.ok, certified.problems
    assert certified.format == "pdf"
    assert certified.timestamp_time is not None
    assert certified.bundel is not None
    assert certified.bundel["bsn"] == CITIZEN
    assert csp_violations == []
    for name in ("1-portaal-knop", "2-digid-inloggen", "3-toestemming", "4-resultaat"):
        assert (OUTPUT / f"{name}.png").stat().st_size > 1000
