"""Alerts in the console: the alerts page, acknowledging from the banner (approver or admin, CSRF,
audited as ``alert_ack`` by the logged-in person), and a failed "verify now" raising ``verify_failed``
end to end (a record tampered in the store, verified from the console, the alert in the banner)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import (
    ConsoleGateway,
    close_clients,
    csrf_of,
    gateway_for_module,
    login,
    start_console_gateway,
    stop_console_gateway,
)

from conftest import wait_until
from mcp_gateway.alerts.board import Alert

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    yield from gateway_for_module(tmp_path_factory)


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


def _active(gw: ConsoleGateway, rule: str) -> Alert:
    """Deny a call (``denial_burst``) if needed and wait for the active alert of ``rule``."""
    board = gw.runtime.alerts
    assert board is not None
    if rule == "denial_burst" and not any(a.rule == rule for a in board.active()):
        assert gw.call("note.delete_all", {"confirm": True})["is_error"]
    wait_until(lambda: any(a.rule == rule for a in board.active()), what=f"an active {rule} alert")
    return next(a for a in board.active() if a.rule == rule)


def _acks(gw: ConsoleGateway, alert_id: str) -> list[Any]:
    return [r for r in gw.audit() if r.kind == "alert_ack" and r.detail.get("alert_id") == alert_id]


def test_an_approver_acknowledges_an_alert_from_the_banner_audited_as_herself(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    alert = _active(gw, "denial_burst")
    client = login(gw, "april")
    page = client.get("/approvals").text
    assert f'id="banner-{alert.id}"' in page and f"/alerts/{alert.id}/acknowledge" in page
    answer = client.post(
        f"/alerts/{alert.id}/acknowledge",
        data={"csrf": csrf_of(client), "back": "approvals", "by": "mallory"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/approvals"
    after = client.get("/approvals").text
    assert "acknowledged by april" in after and f'id="banner-{alert.id}"' not in after
    done = gw.runtime.alerts.get(alert.id)  # type: ignore[union-attr]
    assert done is not None and done.acknowledged_by == "april"  # never the name in the form
    (ack,) = _acks(gw, alert.id)
    assert ack.detail["by"] == "april" and ack.detail["rule"] == "denial_burst"
    listed = client.get("/alerts").text
    row = listed.split(f'id="alert-{alert.id}"', 1)[1].split("</tr>", 1)[0]
    assert "by april" in row and 'class="acknowledge"' not in row


def test_a_viewer_a_missing_csrf_token_or_another_site_cannot_acknowledge(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    alert = _active(gw, "denial_burst")
    viewer = login(gw, "victor")
    assert f"/alerts/{alert.id}/acknowledge" not in viewer.get("/audit").text  # no button for a viewer
    assert viewer.post(f"/alerts/{alert.id}/acknowledge", data={"csrf": csrf_of(viewer)}).status_code == 403
    approver = login(gw, "april")
    assert approver.post(f"/alerts/{alert.id}/acknowledge", data={}).status_code == 403
    cross_site = approver.post(
        f"/alerts/{alert.id}/acknowledge",
        data={"csrf": csrf_of(approver)},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    still = gw.runtime.alerts.get(alert.id)  # type: ignore[union-attr]
    assert still is not None and still.active and _acks(gw, alert.id) == []


def test_an_unknown_alert_is_reported_and_the_way_back_stays_in_the_console(
    console_gateway: ConsoleGateway,
) -> None:
    client = login(console_gateway, "alice")
    answer = client.post(
        "/alerts/al_0000000000000000/acknowledge",
        data={"csrf": csrf_of(client), "back": "https://evil.example/"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/alerts"
    assert "no alert `al_0000000000000000`" in client.get("/alerts").text


def test_a_tampered_record_found_by_verify_now_raises_the_verify_failed_alert(tmp_path: Path) -> None:
    gw = start_console_gateway(tmp_path / "gw", alerts={"verify_failed": True})
    try:
        for i in range(3):
            gw.call("note.echo", {"text": f"before tampering {i}"})
        db = sqlite3.connect(gw.settings.data_dir / "audit.db")
        with db:
            db.execute("""UPDATE audit SET detail = '{"edited":true}' WHERE seq = 2""")
        db.close()
        admin = login(gw, "alice")
        headers = {"X-CSRF-Token": csrf_of(admin), "Accept": "application/json"}
        assert admin.post("/chain/verify", headers=headers).status_code == 202
        run: dict[str, Any] = {}

        def finished() -> bool:
            run.update(admin.get("/chain/verify", headers={"Accept": "application/json"}).json())
            return run.get("phase") == "done"

        wait_until(finished, what="the verify run")
        assert run["ok"] is False and any(p.startswith("seq 2:") for p in run["problems"])
        record = next(r for r in reversed(gw.audit()) if r.kind == "audit_verify")
        assert (record.status, record.decision, record.detail["by"]) == ("failed", "deny", "alice")
        alert = _active(gw, "verify_failed")
        assert alert.seq > record.seq and alert.severity == "critical"
        banner = admin.get("/chain").text.split('id="alert-banner"', 1)[1].split("</section>", 1)[0]
        assert "verify_failed" in banner and f'id="banner-{alert.id}"' in banner
    finally:
        stop_console_gateway(gw)
