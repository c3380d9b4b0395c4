"""Sealed ``requestState`` across replicas: two ``Gateway`` instances in process sharing a vault and the
store of used tokens (SQLite in one data dir, or a PostgreSQL schema), each with its own audit log.
A state one seals is good once on either; replayed, expired, forged or tampered states are refused,
and each refusal is in the refusing instance's audit log."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
import pytest
from tests.conftest import PG_DSN
from tests.core.test_gateway import AGENT, POLICY, SAMPLE, InMemoryUpstream, _Caller

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import (
    PREVIOUS_STATE_KEY_NAME,
    STATE_KEY_NAME,
    RequestStates,
    Resume,
    open_request_states,
    rotate_state_key,
    state_key,
    state_keys,
)
from mcp_gateway.core.spent_states import STORE_FILE, SQLiteSpentStates
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import GatewayError, InvalidRequestState, VaultError
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("modern_caller")]

ARGS = {"text": "hi"}
ANSWER = {"q": {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "m"}}
ROUND = {"resultType": "input_required", "inputRequests": {"q": SAMPLE}, "requestState": "up-state"}
DONE = {"resultType": "complete", "content": [{"type": "text", "text": "done"}]}


@dataclass(frozen=True)
class _Store:
    url: str
    schema_name: str


@pytest.fixture
def modern_caller() -> Iterator[None]:
    token = CURRENT_RELAY.set(_Caller({"sampling": {}}))  # type: ignore[arg-type]
    yield
    CURRENT_RELAY.reset(token)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> _Store | None:
    if request.param == "sqlite":
        return None  # SQLite in the shared data dir
    return _Store(PG_DSN, request.getfixturevalue("pg_schema"))


@pytest.fixture
def replicas(tmp_path: Path, shared_store: _Store | None) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways over one vault store and one used-token store, each with its own audit log."""
    master = MasterKey.generate()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    built: list[Gateway] = []
    for name in ("a", "b"):
        vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(master))
        built.append(
            Gateway(
                policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
                secrets=SecretsView(vault),
                audit=AuditLog(SQLiteAuditSink(tmp_path / f"audit-{name}.db")),
                upstreams={"up": InMemoryUpstream()},  # type: ignore[dict-item]
                states=open_request_states(vault, tmp_path, shared_store),
            )
        )
    yield built[0], built[1]
    for gateway in built:
        gateway.states.spent.close()


def _upstream(gateway: Gateway) -> InMemoryUpstream:
    return gateway.upstreams["up"]  # type: ignore[return-value]


def _last_record(gateway: Gateway) -> tuple[str, str, str]:
    record = gateway.audit.sink.records()[-1]  # type: ignore[attr-defined]
    return record.kind, record.status, record.tool


async def _sealed_by(gateway: Gateway) -> str:
    _upstream(gateway).answers.append(ROUND)
    first = await gateway.call_tool(AGENT, "up.echo", ARGS)
    assert isinstance(first, types.InputRequiredResult) and first.request_state is not None
    return first.request_state


async def _refused(gateway: Gateway, state: str) -> None:
    calls = len(_upstream(gateway).calls)
    with pytest.raises(InvalidRequestState, match="invalid or expired requestState"):
        await gateway.call_tool(AGENT, "up.echo", ARGS, Resume(ANSWER, state))
    assert len(_upstream(gateway).calls) == calls  # the upstream saw nothing
    assert _last_record(gateway) == ("denied", "invalid_request_state", "up.echo")


async def test_a_state_sealed_by_one_replica_is_accepted_once_by_another_then_refused_on_both(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    state = await _sealed_by(a)
    _upstream(b).answers.append(DONE)
    done = await b.call_tool(AGENT, "up.echo", ARGS, Resume(ANSWER, state))
    assert isinstance(done, types.CallToolResult) and not done.is_error
    assert _upstream(b).calls[-1][2:] == (ANSWER, "up-state")  # the upstream's own state, unsealed
    assert _last_record(b) == ("outcome", "ok", "up.echo")
    await _refused(b, state)
    await _refused(a, state)


async def test_a_state_is_still_good_after_its_replica_restarts(
    tmp_path: Path, replicas: tuple[Gateway, Gateway], shared_store: _Store | None
) -> None:
    a, _ = replicas
    state = await _sealed_by(a)
    a.states.spent.close()
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), a.secrets.vault.keyring)
    a.states = open_request_states(vault, tmp_path, shared_store)  # the restarted process
    _upstream(a).answers.append(DONE)
    done = await a.call_tool(AGENT, "up.echo", ARGS, Resume(ANSWER, state))
    assert isinstance(done, types.CallToolResult) and not done.is_error
    await _refused(a, state)


async def test_an_expired_state_is_refused_by_the_other_replica(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    state = await _sealed_by(a)
    b.states.clock = lambda: a.states.clock() + a.states.ttl + 1
    await _refused(b, state)


@pytest.mark.parametrize("edit", ["flip-a-character", "cut-short", "forged", "another-deployment"])
async def test_a_forged_or_tampered_state_is_refused_and_audited(
    replicas: tuple[Gateway, Gateway], edit: str
) -> None:
    a, b = replicas
    state = await _sealed_by(a)
    if edit == "flip-a-character":
        middle = len(state) // 2
        state = state[:middle] + ("A" if state[middle] != "A" else "B") + state[middle + 1 :]
    elif edit == "cut-short":
        state = state[:-4]
    elif edit == "forged":
        state = base64.urlsafe_b64encode(b'{"a":"agent-a","u":"evil"}').decode()
    else:  # sealed with a key that is not this deployment's
        stranger = RequestStates()
        state = stranger.seal(AGENT, "tools/call", "up.echo", ARGS, "evil")
    await _refused(b, state)
    # The genuine state was not spent by the refusals.
    assert len(_upstream(b).calls) == 0


async def test_every_replica_uses_the_one_key_the_first_start_stored(tmp_path: Path) -> None:
    master = MasterKey.generate()
    vaults = [Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(master)) for _ in range(2)]
    first = open_request_states(vaults[0], tmp_path, None)
    second = open_request_states(vaults[1], tmp_path, None)
    try:
        assert first.keys == second.keys and len(first.keys[0]) == 32
        assert vaults[1].resolve(STATE_KEY_NAME).reveal() == vaults[0].resolve(STATE_KEY_NAME).reveal()
    finally:
        first.spent.close()
        second.spent.close()


async def test_a_malformed_stored_key_is_refused_by_name_and_the_process_keeps_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put(STATE_KEY_NAME, b"not-a-key")
    states = open_request_states(vault, tmp_path, None)
    try:
        assert states.keys == []
        assert f"vault secret `{STATE_KEY_NAME}` is not a 32-byte key" in caplog.text
        assert "not-a-key" not in caplog.text
    finally:
        states.spent.close()
    with pytest.raises(VaultError):
        state_key(vault)


async def test_a_failing_used_token_store_refuses_the_retry(tmp_path: Path) -> None:
    spent = SQLiteSpentStates(tmp_path / STORE_FILE)
    states = RequestStates(spent=spent)
    token = states.seal(AGENT, "tools/call", "up.echo", ARGS, "s")
    spent.close()  # every statement now fails
    with pytest.raises(InvalidRequestState):
        await states.open(token, AGENT, "tools/call", "up.echo", ARGS)


async def test_after_a_key_rotation_a_restarted_replica_opens_old_tokens_and_seals_with_the_new_key(
    tmp_path: Path, replicas: tuple[Gateway, Gateway], shared_store: _Store | None
) -> None:
    a, b = replicas
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), a.secrets.vault.keyring)
    before = state_key(vault)
    old_token, older_token = await _sealed_by(a), await _sealed_by(a)
    rotate_state_key(vault)
    assert state_key(vault) != before and vault.resolve(PREVIOUS_STATE_KEY_NAME).reveal()
    b.states.spent.close()
    b.states = open_request_states(vault, tmp_path, shared_store)  # b restarts after the rotation
    # A token sealed before the rotation still opens, once, on the restarted replica...
    _upstream(b).answers.append(DONE)
    done = await b.call_tool(AGENT, "up.echo", ARGS, Resume(ANSWER, old_token))
    assert isinstance(done, types.CallToolResult) and not done.is_error
    await _refused(b, old_token)
    # ...and what it seals now is refused by the replica still on the old key (a rolling restart).
    await _refused(a, await _sealed_by(b))
    # A second rotation drops the first key: its tokens no longer open anywhere restarted.
    rotate_state_key(vault)
    b.states.spent.close()
    b.states = open_request_states(vault, tmp_path, shared_store)
    await _refused(b, older_token)


def test_a_rotation_needs_an_unsealed_vault_and_a_previous_key_that_is_not_a_key_is_ignored(
    tmp_path: Path,
) -> None:
    sealed = Vault(SQLiteSecretStore(tmp_path / "sealed.db"), None)
    with pytest.raises(GatewayError):
        rotate_state_key(sealed)
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put(PREVIOUS_STATE_KEY_NAME, b"not-a-key")
    assert state_keys(vault) == [state_key(vault)]
