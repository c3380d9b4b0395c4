"""``deploy/compose/make-secrets.sh`` run for real (as root, as its header says): the files it makes,
their owners and modes, and a real ``redis-server`` started from the ``redis.conf`` it writes, which
refuses a client without the password, answers the compose health check, and counts quotas for a
gateway that reads the ``redis_password`` file it wrote."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from conftest import free_port
from mcp_gateway.quotas.model import quota_checks
from mcp_gateway.quotas.store import RedisQuotaStore, read_password_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXPECTED = {  # file: (owner uid, mode)
    "master_key": (10001, 0o400),
    "pgpass": (10001, 0o400),
    "pg_password": (999, 0o400),
    "redis_password": (10001, 0o400),
    "redis.conf": (999, 0o400),
}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="make-secrets.sh gives the files to the containers' uids: it runs as root"
)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose")
    script = folder / "make-secrets.sh"
    shutil.copy(DEPLOY / "compose" / "make-secrets.sh", script)
    subprocess.run(["bash", str(script)], check=True, capture_output=True, timeout=60)
    return folder / "secrets"


@pytest.fixture(scope="module")
def compose_redis(secrets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """redis-server from the generated redis.conf (on a free port and a folder of the test's own)."""
    port, folder = free_port(), tmp_path_factory.mktemp("redis-data")
    proc = subprocess.Popen(
        [
            "redis-server",
            str(secrets_dir / "redis.conf"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis(port=port) as client:
                    client.ping()
            except redis.AuthenticationError:
                break  # up, and asking for the password
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            else:
                raise AssertionError("the generated redis.conf let a client in without the password")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_secret_files_belong_to_the_uids_that_read_them_and_no_one_else(secrets_dir: Path) -> None:
    found = {p.name: (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in secrets_dir.iterdir()}
    assert found == EXPECTED
    # A second run keeps every file (a new master key would not open the vault the old one sealed).
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    subprocess.run(
        ["bash", str(secrets_dir.parent / "make-secrets.sh")], check=True, capture_output=True, timeout=60
    )
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before


def test_the_generated_redis_requires_the_password_the_gateway_reads(
    secrets_dir: Path, compose_redis: int
) -> None:
    password = read_password_file(secrets_dir / "redis_password")
    assert f"requirepass {password}\n" in (secrets_dir / "redis.conf").read_text()
    with (
        redis.Redis(port=compose_redis, password="not-" + password) as wrong,
        pytest.raises(redis.AuthenticationError),
    ):
        wrong.ping()
    store = RedisQuotaStore(
        f"redis://127.0.0.1:{compose_redis}/0", password=password, key_prefix="compose-test:"
    )
    try:
        store.check_and_hit(quota_checks("agent", "tool", tool_limits=["5/hour"]), time.time())
    finally:
        store.close()


def test_the_compose_health_check_passes_with_the_password_file_and_fails_without_it(
    secrets_dir: Path, compose_redis: int, tmp_path: Path
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    _, check = compose["services"]["redis"]["healthcheck"]["test"]
    # As the container runs it: compose's `$$` is a `$`; the test's server is on its own port.
    command = check.replace("$$", "$").replace("redis-cli ping", f"redis-cli -p {compose_redis} ping")
    assert (
        subprocess.run(
            ["sh", "-c", command.replace("/run/secrets/redis_conf", str(secrets_dir / "redis.conf"))],
            timeout=30,
        ).returncode
        == 0
    )
    empty = tmp_path / "redis.conf"
    empty.write_text("appendonly yes\n")
    assert (
        subprocess.run(
            ["sh", "-c", command.replace("/run/secrets/redis_conf", str(empty))],
            capture_output=True,
            timeout=30,
        ).returncode
        != 0
    )
