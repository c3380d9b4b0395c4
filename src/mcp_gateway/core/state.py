"""The running policy and the vault's view for the call path: both refreshed while the gateway runs.

``PolicyHolder`` keeps the last good policy when a reload fails. ``SecretsView`` holds the vault's
plaintexts for injection and the redactor built from every value this process has seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from mcp_gateway.errors import GatewayError, IntegrityError, PolicyLoadError, VaultSealed
from mcp_gateway.policy.history import PolicyFiles, PolicyLoadEvent, PolicyRecorder, Trigger
from mcp_gateway.policy.history_store import REPLICA
from mcp_gateway.policy.load import load_versioned_policy
from mcp_gateway.policy.model import Policy
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import Clock, SecretValue, system_clock
from mcp_gateway.vault.crypto import Keyring
from mcp_gateway.vault.service import Vault

logger = logging.getLogger(__name__)


class PolicyHolder:
    """The running policy and its version; a reload that fails keeps the last good one (and its version).

    Args:
        path: the policy file or directory.
        policy: the policy in force.
        builtin_tools: toolset → tool names, checked on every reload (``load_policy``).
        version: ``policy_version`` of the files ``policy`` came from ("" when built from text).
        clock: the time source for ``loaded_at``.
    """

    def __init__(
        self,
        path: Path,
        policy: Policy,
        builtin_tools: Mapping[str, Collection[str]] | None = None,
        *,
        version: str = "",
        clock: Clock = system_clock,
        history: PolicyRecorder | None = None,
    ) -> None:
        self.path = path
        self.policy = policy
        self.builtin_tools = builtin_tools
        self.version = version
        self._clock = clock
        self.loaded_at = clock()
        """When the policy in force was loaded (epoch seconds): its first load or latest good reload."""
        self.last_error: str | None = None
        self.history = history
        """Where each load is recorded (``policy/history_store.py``), None for nowhere."""

    @classmethod
    def load(
        cls,
        path: Path,
        builtin_tools: Mapping[str, Collection[str]] | None = None,
        *,
        clock: Clock = system_clock,
        history: PolicyRecorder | None = None,
    ) -> PolicyHolder:
        """Load the initial policy. Raises ``PolicyLoadError``: a gateway must not start on a bad one.

        ``builtin_tools`` (toolset → tool names): a grant under a built-in prefix naming no such tool
        is an error, as in ``policy check``. ``history`` records this load (trigger ``start``).
        """
        texts: list[tuple[str, str]] = []
        policy, version = load_versioned_policy(path, builtin_tools=builtin_tools, texts=texts)
        holder = cls(path, policy, builtin_tools, version=version, clock=clock, history=history)
        holder._record("start", "", PolicyFiles.of(version, texts), ())
        return holder

    def reload(self, trigger: Trigger = "reload") -> PolicyLoadError | None:
        """Re-read the policy files; on error keep the running policy and return the error.

        Either way the load is recorded in ``history`` with ``trigger`` (what caused it).
        """
        texts: list[tuple[str, str]] = []
        previous = self.version
        try:
            policy, version = load_versioned_policy(self.path, builtin_tools=self.builtin_tools, texts=texts)
        except PolicyLoadError as exc:
            self.last_error = str(exc)
            self._record(trigger, previous, None, exc.problems)
            return exc
        # One writer (the reload thread); a reader racing it may pair the new policy with the old
        # version for an instant, which only delays what an operator sees, never what is enforced.
        self.policy, self.version, self.loaded_at = policy, version, self._clock()
        self.last_error = None
        self._record(trigger, previous, PolicyFiles.of(version, texts), ())
        return None

    def close(self) -> None:
        """Close the history store, if any; idempotent."""
        if self.history is not None:
            self.history.close()

    def _record(
        self, trigger: str, previous: str, files: PolicyFiles | None, problems: Sequence[str]
    ) -> None:
        if self.history is None:
            return
        event = PolicyLoadEvent(
            at=self._clock(),
            ok=files is not None,
            version=self.version,
            previous=previous,
            path=str(self.path),
            trigger=trigger,
            replica=REPLICA,
            problems=tuple(problems),
            files=files,
        )
        try:
            self.history.record(event)
        except GatewayError as exc:
            # The history is for people; the policy load itself stands.
            logger.error("policy history not recorded: %s", exc)


class SecretsView:
    """The vault's plaintexts for injection and the redactor built from them, refreshed on change.

    The redactor keeps every value this process has seen, not only the current ones: after a
    secret is replaced, an upstream may still hold (and echo) the old value until it reconnects.

    Args:
        vault: the vault.
        reload_keys: re-reads the master keys (after ``vault rotate-master`` in another process).
        on_change: called with the names whose values changed, so their users can reconnect.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        reload_keys: Callable[[], Keyring | None] | None = None,
        on_change: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.vault = vault
        self._reload_keys = reload_keys
        self.on_change = on_change
        self._generation: int | None = None
        self._redactor: Redactor = EMPTY
        self._values: dict[str, SecretValue] = {}
        self._seen: dict[bytes, SecretValue] = {}
        self._failed_generation: int | None = None

    def _refresh(self) -> None:
        if self.vault.sealed:
            return
        generation = self.vault.generation()
        if generation == self._generation:
            return
        try:
            values = self.vault.resolve_all()
        except IntegrityError:
            # After `vault rotate-master` the envelopes are sealed by a key this process has not
            # loaded yet: re-read the key source once, then give up loudly.
            if self._reload_keys is None:
                raise
            self.vault.reload_keyring(self._reload_keys())
            if self.vault.sealed:
                return  # the key source now holds a key that is not the vault's: logged by the vault
            values = self.vault.resolve_all()
        changed = {
            name
            for name in values.keys() | self._values.keys()
            if (old := self._values.get(name)) is None
            or (new := values.get(name)) is None
            or old.reveal() != new.reveal()
        }
        first = self._generation is None
        self._values = values
        for value in values.values():
            self._seen[value.reveal()] = value
        self._redactor = Redactor.from_secrets(self._seen.values())
        self._generation = generation
        if changed and not first and self.on_change is not None:
            self.on_change(changed)

    def current_redactor(self) -> Redactor:
        """The redactor as last refreshed (no I/O: safe inside logging)."""
        return self._redactor

    def redactor(self) -> Redactor:
        """The redactor for every value the vault holds now (asks the store whether anything changed:
        one ``PRAGMA data_version`` on SQLite; twice per governed call)."""
        vault = self.vault
        try:
            if vault.sealed or vault.generation() == self._generation:
                return self._redactor  # unchanged: `_refresh` would return at once
            self._refresh()
        except IntegrityError as exc:
            # Once per store generation, not once per call: the same failure would flood the log.
            generation = self.vault.generation()
            if generation != self._failed_generation:
                self._failed_generation = generation
                logger.error("vault integrity failure while refreshing the redactor: %s", exc)
        return self._redactor

    def resolve(self, name: str) -> SecretValue:
        """Resolve ``name``. Raises ``VaultSealed``, ``SecretNotFound``, ``IntegrityError``."""
        if self.vault.sealed:
            raise VaultSealed(f"vault is sealed: secret `{name}` cannot be resolved")
        self._refresh()
        value = self._values.get(name)
        return value if value is not None else self.vault.resolve(name)
