"""Quotas on a Redis that requires a password: the password comes from ``quotas.redis_password_file``
(a container secret), never from gateway.yaml. Against a real ``redis-server --requirepass`` of the
test's own. Attack cases: no password, a wrong one, a file other users may read, a password both in
the URL and a file; each is refused, and no message names a password."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from conftest import free_port
from mcp_gateway.cli import app
from mcp_gateway.quotas.model import QuotaUnavailable, quota_checks
from mcp_gateway.quotas.settings import QuotaSettings
from mcp_gateway.quotas.store import RedisQuotaStore, open_quota_admin, open_quota_store, read_password_file

T0 = 1_700_000_000.0
CHECKS = quota_checks("ops-agent", "ops.rerun_job", tool_limits=["2/hour"])


class PasswordRedis:
    def __init__(self, port: int, password: str) -> None:
        self.port, self.password = port, password
        self.url = f"redis://127.0.0.1:{port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, password=self.password)


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    """A real redis-server of this module's own, on a free port, that requires a password."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian's redis-server package; .ci/run installs it)"
    folder = tmp_path_factory.mktemp("redis")
    password = secrets.token_urlsafe(24)
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {folder}\nrequirepass {password}\n'
    )
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PasswordRedis(port, password)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with server.client() as client:
                    if client.ping():
                        break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def password_file(folder: Path, text: str, mode: int = 0o400) -> Path:
    path = folder / f"redis-password-{uuid.uuid4().hex[:8]}"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_the_password_file_opens_a_redis_that_requires_one_and_counts_are_shared(
    password_redis: PasswordRedis, tmp_path: Path
) -> None:
    prefix = f"mgw-test-pw:{uuid.uuid4().hex}:"
    settings = QuotaSettings(
        store="redis",
        redis_url=password_redis.url,
        redis_password_file=password_file(tmp_path, password_redis.password),
        key_prefix=prefix,
    )
    first, second = open_quota_store(settings, tmp_path), open_quota_store(settings, tmp_path)
    try:
        first.check_and_hit(CHECKS, T0)
        second.check_and_hit(CHECKS, T0 + 1)  # another replica, the same counts
        with pytest.raises(Exception, match="2/hour"):
            first.check_and_hit(CHECKS, T0 + 2)
    finally:
        first.close()
        second.close()
    with password_redis.client() as client:
        assert list(client.scan_iter(match=f"{prefix}*"))  # written to that server, under the prefix


def test_a_relative_password_file_is_read_from_the_data_dir(
    password_redis: PasswordRedis, tmp_path: Path
) -> None:
    file = password_file(tmp_path, password_redis.password)
    settings = QuotaSettings(
        store="redis", redis_url=password_redis.url, redis_password_file=Path(file.name), key_prefix="x:"
    )
    admin = open_quota_admin(settings, tmp_path)
    try:
        assert admin.usage(T0) == []
    finally:
        admin.close()


@pytest.mark.parametrize("given", ["none", "wrong"])
def test_without_the_password_or_with_a_wrong_one_every_call_is_refused_naming_no_password(
    password_redis: PasswordRedis, tmp_path: Path, given: str
) -> None:
    wrong = secrets.token_urlsafe(24)
    settings = QuotaSettings(
        store="redis",
        redis_url=password_redis.url,
        redis_password_file=password_file(tmp_path, wrong) if given == "wrong" else None,
        key_prefix="x:",
    )
    store = open_quota_store(settings, tmp_path)
    try:
        with pytest.raises(QuotaUnavailable) as refused:
            store.check_and_hit(CHECKS, T0)  # fails closed: a quota that cannot be counted refuses
    finally:
        store.close()
    message = str(refused.value)
    assert refused.value.kind == "quota_unavailable" and "AuthenticationError" in message
    assert wrong not in message and password_redis.password not in message


def test_a_password_file_open_to_others_empty_missing_or_not_a_file_is_refused_at_open(
    tmp_path: Path,
) -> None:
    secret = "pw-" + secrets.token_urlsafe(16)
    cases = {
        "has mode 0644: other users may open it (at most 0640)": password_file(tmp_path, secret, 0o644),
        "has mode 0604": password_file(tmp_path, secret, 0o604),
        "is empty": password_file(tmp_path, "  ", 0o600),
        "No such file or directory": tmp_path / "absent",
        "Is a directory": tmp_path,
    }
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # a FIFO in the file's place must not hang the start
    cases["is not a regular file (fifo)"] = fifo
    for expected, path in cases.items():
        with pytest.raises(QuotaUnavailable) as refused:
            read_password_file(path)
        message = str(refused.value)
        assert expected.removesuffix(" (fifo)") in message and str(path) in message, message
        assert secret not in message
    # Group-readable (a Kubernetes secret volume with fsGroup) is accepted, as for the master key file.
    assert read_password_file(password_file(tmp_path, secret, 0o440)) == secret


def test_a_password_in_the_url_and_a_password_file_is_a_config_error_that_does_not_echo_the_url(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="keep the password in the file only") as refused:
        QuotaSettings(
            store="redis",
            redis_url="redis://:inline-pw-7@127.0.0.1:6379/0",
            redis_password_file=tmp_path / "pw",
        )
    assert "inline-pw-7" not in str(refused.value)


def test_quota_show_reaches_a_password_redis_named_in_gateway_yaml_and_refuses_a_loose_file(
    password_redis: PasswordRedis, tmp_path: Path
) -> None:
    prefix = f"mgw-test-pw-cli:{uuid.uuid4().hex}:"
    store = RedisQuotaStore(password_redis.url, password=password_redis.password, key_prefix=prefix)
    store.check_and_hit(CHECKS, time.time())
    store.close()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(
        "version: 1\nagents:\n  ops-agent:\n    grants:\n"
        "      - {id: r, tool: ops.rerun_job, rate: ['2/hour']}\n"
    )
    file = password_file(tmp_path, password_redis.password)
    quotas = {"store": "redis", "redis_url": password_redis.url, "key_prefix": prefix}
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": "data",
                "policies": "policies",
                "quotas": {**quotas, "redis_password_file": str(file)},
            }
        )
    )
    shown = CliRunner().invoke(app, ["quota", "show", "-c", str(config), "--json"])
    assert shown.exit_code == 0, shown.stderr
    assert [(row["agent"], row["used"]) for row in map(json.loads, shown.stdout.splitlines())] == [
        ("ops-agent", 1)
    ]
    file.chmod(0o604)
    refused = CliRunner().invoke(app, ["quota", "show", "-c", str(config), "--json"])
    assert refused.exit_code != 0 and "other users may open it" in refused.stderr
    assert password_redis.password not in refused.stderr + refused.stdout
