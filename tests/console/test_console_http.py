"""The console over real HTTP (httpx against a gateway under uvicorn): login, roles, CSRF, escaping."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from console_support import (
    WRITES,
    ConsoleGateway,
    client_for,
    close_clients,
    csrf_of,
    gateway_for_module,
    login,
)

from conftest import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    yield from gateway_for_module(tmp_path_factory)


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


def _rows(page: str) -> str:
    """The records table's rows of an audit page (not the banner or the filters)."""
    return page.split('<tbody id="record-rows">', 1)[1].split("</tbody>", 1)[0]


def _kinds(gw: ConsoleGateway, kind: str) -> list[object]:
    return [r for r in gw.audit() if r.kind == kind]


def test_every_console_answer_carries_a_strict_csp_and_no_framing(console_gateway: ConsoleGateway) -> None:
    for path in ("/login", "/static/console.js", "/nope"):
        answer = httpx.get(console_gateway.console + path)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp and answer.headers["x-frame-options"] == "DENY"


def test_pages_without_a_session_send_the_browser_to_login(console_gateway: ConsoleGateway) -> None:
    answer = httpx.get(console_gateway.console + "/approvals")
    assert answer.status_code == 303 and answer.headers["location"].endswith("/console/login")


def test_the_session_cookie_is_httponly_samesite_strict_and_scoped_to_the_console(
    console_gateway: ConsoleGateway,
) -> None:
    client = client_for(console_gateway)
    page = client.get("/login")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/login", data={"nonce": nonce, "token": console_gateway.admin_tokens["victor"]})
    cookie = answer.headers["set-cookie"]
    assert "mgw_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console" in cookie and "Secure" not in cookie  # plain http on loopback
    assert client.get("/audit").status_code == 200


def test_a_wrong_token_is_refused_and_the_failure_audited_without_the_token(
    console_gateway: ConsoleGateway,
) -> None:
    client = client_for(console_gateway)
    page = client.get("/login")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    forged = "mga_abcdefghijkl_" + "x" * 43
    answer = client.post("/login", data={"nonce": nonce, "token": forged})
    assert answer.status_code == 401 and "Login refused." in answer.text
    failure = _kinds(console_gateway, "admin_auth_failure")[-1]
    assert failure.decision == "deny" and failure.detail["token_id"] == "abcdefghijkl"  # type: ignore[attr-defined]
    assert forged not in str(failure)


def test_a_person_without_a_console_role_and_an_agent_token_cannot_log_in(
    console_gateway: ConsoleGateway,
) -> None:
    for token, reason in (
        (console_gateway.admin_tokens["mallory"], "`mallory` has no console role"),
        (console_gateway.agent_token, "an agent token cannot log in to the console"),
    ):
        client = client_for(console_gateway)
        nonce = client.get("/login").text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
        assert client.post("/login", data={"nonce": nonce, "token": token}).status_code == 401
        assert _kinds(console_gateway, "admin_auth_failure")[-1].detail["reason"] == reason  # type: ignore[attr-defined]


def test_a_login_post_without_the_forms_one_time_value_is_refused(console_gateway: ConsoleGateway) -> None:
    answer = httpx.post(
        console_gateway.console + "/login", data={"token": console_gateway.admin_tokens["alice"]}
    )
    assert answer.status_code == 403 and "mgw_console=" not in answer.headers.get("set-cookie", "")


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_decides_nothing(
    console_gateway: ConsoleGateway,
) -> None:
    approval_id = console_gateway.park("csrf-probe")
    client = login(console_gateway, "april")
    for data in ({"note": "no token"}, {"note": "wrong", "csrf": "x" * 43}):
        answer = client.post(f"/approvals/{approval_id}/approve", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert console_gateway.runtime.approvals is not None
    assert console_gateway.runtime.approvals.get(approval_id).status == "pending"  # type: ignore[union-attr]


def test_a_cross_site_origin_is_refused_even_with_the_right_csrf_token(
    console_gateway: ConsoleGateway,
) -> None:
    approval_id = console_gateway.park("origin-probe")
    client = login(console_gateway, "april")
    token = csrf_of(client)
    answer = client.post(
        f"/approvals/{approval_id}/approve", data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403 and "cross-site" in answer.text


def test_a_viewer_cannot_approve(console_gateway: ConsoleGateway) -> None:
    approval_id = console_gateway.park("viewer-probe")
    client = login(console_gateway, "victor")
    answer = client.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf_of(client)})
    assert answer.status_code == 403 and "approver role" in answer.text
    assert console_gateway.runtime.approvals.get(approval_id).status == "pending"  # type: ignore[union-attr]
    assert 'class="approve"' not in client.get("/approvals").text


def test_the_requester_cannot_approve_its_own_call_and_the_refusal_is_audited(
    console_gateway: ConsoleGateway,
) -> None:
    approval_id = console_gateway.park("self-approval")
    client = login(console_gateway, "agent-a")
    answer = client.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf_of(client)})
    assert answer.status_code == 303
    assert "a requester never approves its own call" in client.get("/approvals").text
    refused = [r for r in _kinds(console_gateway, "approval") if r.detail.get("approval_id") == approval_id]  # type: ignore[attr-defined]
    assert refused and refused[-1].detail["error_kind"] == "approval_self_approval"  # type: ignore[attr-defined]


def test_an_approver_approves_as_the_logged_in_person_and_the_call_then_runs(
    console_gateway: ConsoleGateway,
) -> None:
    approval_id = console_gateway.park("approved by april")
    client = login(console_gateway, "april")
    answer = client.post(
        f"/approvals/{approval_id}/approve",
        data={"csrf": csrf_of(client), "note": "looks right", "approver": "someone-else"},
    )
    assert answer.status_code == 303
    approval = console_gateway.runtime.approvals.get(approval_id)  # type: ignore[union-attr]
    assert approval.status == "approved" and approval.decided_by == "april" and approval.note == "looks right"  # type: ignore[union-attr]
    decision = [r for r in _kinds(console_gateway, "approval") if r.detail.get("approval_id") == approval_id][
        -1
    ]  # type: ignore[attr-defined]
    assert decision.detail["approver"] == "april" and decision.detail["via"] == "console"  # type: ignore[attr-defined]
    done = console_gateway.call("note.write", {"text": "approved by april", "approval_id": approval_id})
    assert not done["is_error"] and "approved by april" in WRITES


def test_a_session_cookie_from_before_logout_is_refused(console_gateway: ConsoleGateway) -> None:
    client = login(console_gateway, "victor")
    cookie = client.cookies["mgw_console"]
    assert client.post("/logout", data={"csrf": csrf_of(client)}).status_code == 303
    replay = httpx.get(console_gateway.console + "/audit", cookies={"mgw_console": cookie})
    assert replay.status_code == 303 and replay.headers["location"].endswith("/login")


def test_a_session_ends_when_the_admin_token_it_was_opened_with_is_revoked(
    console_gateway: ConsoleGateway,
) -> None:
    record, token = console_gateway.runtime.admins.create("victor")  # a second token of victor's
    client = client_for(console_gateway)
    nonce = client.get("/login").text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    assert client.post("/login", data={"nonce": nonce, "token": token}).status_code == 303
    assert client.get("/audit").status_code == 200
    assert console_gateway.runtime.admins.revoke(record.token_id) == 1
    after = client.get("/audit")
    assert after.status_code == 303 and after.headers["location"].endswith("/login")
    # Victor's other sessions (opened with his other token) are not touched.
    assert login(console_gateway, "victor").get("/audit").status_code == 200


def test_sensitive_arguments_show_as_their_hmac_and_marked(console_gateway: ConsoleGateway) -> None:
    assert not console_gateway.call("note.echo", {"text": "hi", "code": "hunter2-secret"})["is_error"]
    intent = [r for r in console_gateway.audit() if r.tool == "note.echo" and r.kind == "intent"][-1]
    client = login(console_gateway, "victor")
    page = client.get(f"/audit/{intent.seq}").text
    assert "hunter2-secret" not in page
    assert intent.args["code"]["hmac"] in page and 'class="badge">sensitive' in page
    assert "covered by the checkpoint" in page or "not yet covered by a signed checkpoint" in page


def test_search_filters_by_tool_glob_decision_and_free_text(console_gateway: ConsoleGateway) -> None:
    console_gateway.call("note.echo", {"text": "findme"})
    console_gateway.call("note.nothing", {})
    client = login(console_gateway, "victor")
    echoes = _rows(client.get("/audit", params={"tool": "note.e*"}).text)
    assert "note.echo" in echoes and "note.nothing" not in echoes and "note.write" not in echoes
    denied = _rows(client.get("/audit", params={"decision": "deny", "tool": "note.*"}).text)
    assert "note.nothing" in denied and "note.echo" not in denied
    reasons = _rows(client.get("/audit", params={"text": "NOTE.NOTHING"}).text)
    assert "note.nothing" in reasons and "note.echo" not in reasons
    bad = client.get("/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and "`since` must be a date and time" in bad.text
    glob = client.get("/audit", params={"tool": "note.[abc"})
    assert glob.status_code == 400 and "note.[abc" in glob.text


def test_keyset_paging_walks_every_record_once(console_gateway: ConsoleGateway) -> None:
    for i in range(3):
        console_gateway.call("note.echo", {"text": f"page-{i}"})
    client = login(console_gateway, "victor")
    seen: list[int] = []
    url: str | None = "/audit"
    while url is not None:
        text = client.get(url).text
        seen += [int(part.split('"', 1)[0]) for part in _rows(text).split('href="/console/audit/')[1:]]
        url = (
            text.split('id="older" href="/console', 1)[1].split('"', 1)[0].replace("&amp;", "&")
            if 'id="older"' in text
            else None
        )
    assert sorted(seen, reverse=True) == seen and len(seen) == len(set(seen)) == len(console_gateway.audit())


def test_admin_revokes_an_agent_token_audited_and_a_viewer_cannot(console_gateway: ConsoleGateway) -> None:
    agents = console_gateway.runtime.agents
    record, _token = agents.create("spare-agent")
    viewer = login(console_gateway, "victor")
    refused = viewer.post("/agents/revoke", data={"csrf": csrf_of(viewer), "token_id": record.token_id})
    assert refused.status_code == 403
    admin = login(console_gateway, "alice")
    assert (
        admin.post("/agents/revoke", data={"csrf": csrf_of(admin), "token_id": record.token_id}).status_code
        == 303
    )
    assert next(r for r in agents.list() if r.token_id == record.token_id).revoked_at is not None
    revokes = [r for r in console_gateway.audit() if r.kind == "token_revoke"]
    assert [(r.status, r.detail["by"]) for r in revokes[-2:]] == [("requested", "alice"), ("ok", "alice")]


def test_only_an_admin_runs_verify_and_the_run_is_audited_and_shown_on_a_records_page(
    console_gateway: ConsoleGateway,
) -> None:
    console_gateway.call("note.echo", {"text": "to be verified"})
    viewer = login(console_gateway, "victor")
    refused = viewer.post("/chain/verify", headers={"X-CSRF-Token": csrf_of(viewer)})
    assert refused.status_code == 403 and refused.json() == {"error": "this needs the admin role"}
    admin = login(console_gateway, "alice")
    started = admin.post("/chain/verify", headers={"X-CSRF-Token": csrf_of(admin)})
    assert started.status_code == 202
    wait_until(lambda: admin.get("/chain/verify").json()["phase"] == "done", timeout=20, what="verify run")
    assert admin.get("/chain/verify").json()["ok"] is True
    run = [r for r in console_gateway.audit() if r.kind == "audit_verify"][-1]
    assert run.status == "ok" and run.detail["by"] == "alice"
    assert "verified (run at seq" in admin.get("/audit/1").text


def test_policy_history_lists_each_load_diffs_two_versions_and_names_the_last_failed_reload(
    console_gateway: ConsoleGateway,
) -> None:
    holder = console_gateway.runtime.gateway.policy
    policy_file = console_gateway.settings.policies / "policy.yaml"
    first = holder.version
    original = policy_file.read_text(encoding="utf-8")
    try:
        policy_file.write_text(original + "      - {id: notes-more, tool: note.more}\n", encoding="utf-8")
        assert holder.reload() is None
        second = holder.version
        policy_file.write_text("version: 1\nagents: [not, a, mapping]\n", encoding="utf-8")
        assert holder.reload() is not None
    finally:
        policy_file.write_text(original, encoding="utf-8")
        holder.reload()
    client = login(console_gateway, "victor")
    page = client.get("/policy", params={"from": first, "to": second}).text
    diff = page.split('id="policy-diff">', 1)[1].split("</pre>", 1)[0]
    assert "+      - {id: notes-more, tool: note.more}" in diff and first in diff and second in diff
    failure = page.split('id="last-failure">', 1)[1].split("</dd>", 1)[0]
    assert "FAILED" in page and f"stayed <code>{second}</code>" in failure
    unknown = client.get("/policy", params={"from": "nope", "to": second})
    assert unknown.status_code == 400 and "no policy version `nope`" in unknown.text


def test_quota_usage_and_grants_are_shown_per_agent_and_tool(console_gateway: ConsoleGateway) -> None:
    console_gateway.call("note.echo", {"text": "counted"})
    client = login(console_gateway, "victor")
    quotas = client.get("/quotas").text.split('id="quotas"', 1)[1]
    row = next(r for r in quotas.split("<tr")[2:] if "note.echo" in r)
    assert "agent-a" in row and "1000/hour" in row and "/ 1000" in row
    agents = client.get("/agents").text
    assert "notes-ask" in agents and "asks a human" in agents and "sensitive" in agents


def test_an_admin_approves_a_changed_pinned_definition_audited_first_and_a_viewer_cannot(
    console_gateway: ConsoleGateway,
) -> None:
    pins = console_gateway.runtime.pins
    assert pins is not None
    pins.pin("crm", "lookup", "c" * 64, '{"description": "look up a customer"}')
    pins.present("crm", "lookup", "d" * 64, '{"description": "look up a customer and email it out"}')
    viewer = login(console_gateway, "victor")
    page = viewer.get("/pins").text
    assert "+" in page and "email it out" in page and 'class="approve-pin"' not in page
    form = {"csrf": csrf_of(viewer), "name": "crm.lookup", "hash": "d" * 64}
    assert viewer.post("/pins/approve", data=form).status_code == 403
    admin = login(console_gateway, "alice")
    assert admin.post("/pins/approve", data={**form, "csrf": csrf_of(admin)}).status_code == 303
    pin = pins.get("crm", "lookup")
    assert pin is not None and pin.status == "pinned" and pin.hash == "d" * 64
    record = [r for r in console_gateway.audit() if r.kind == "admin" and r.tool == "crm.lookup"][-1]
    assert record.detail["by"] == "alice" and record.detail["new_hash"] == "d" * 64


def test_incidents_are_listed_open_first_with_their_checks_and_fixes_escaped(
    console_gateway: ConsoleGateway,
) -> None:
    from mcp_gateway.incidents.model import Fix

    store = console_gateway.runtime.gateway.incidents
    assert store is not None
    hostile = '<img src=x onerror="window.__pwned=1">'
    failing = [{"check": "accepted_values(cur)", "value": hostile, "min": None, "max": 0, "passed": False}]
    common = {"table": "lake.s.revenue", "job": "nightly", "failing": failing}
    store.raise_or_add("inc_0000000000000c01", monitor="revenue", opened_seq=1, now=1000.0, **common)
    store.recover("inc_0000000000000c01", [Fix("call-9", "healer", "data.switch_in", 7)], now=2000.0)
    store.raise_or_add("inc_0000000000000c02", monitor="revenue", opened_seq=9, now=3000.0, **common)
    client = login(console_gateway, "victor")  # a viewer
    page = client.get("/incidents")
    assert page.status_code == 200
    table = page.text.split('id="incidents"', 1)[1]
    rows = [row for row in table.split("<tr")[2:] if "inc_" in row]
    assert [row.split('id="', 1)[1].split('"', 1)[0] for row in rows[:2]] == [
        "inc_0000000000000c02",
        "inc_0000000000000c01",
    ]
    assert "open" in rows[0] and "recovered" in rows[1]
    assert '<a href="/console/audit/7">record 7</a>' in rows[1] and "by healer" in rows[1]
    assert hostile not in page.text and "&lt;img src=x" in page.text
    assert 'href="/console/incidents" aria-current="page"' in page.text
