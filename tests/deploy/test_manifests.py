"""``deploy/``: Kubernetes manifests, the compose file and HAProxy's configuration, checked offline.

Kustomize is not on PyPI, so a small loader here renders the base and overlays, supporting exactly
the kustomization fields the tree uses (anything else is an error, so the overlays cannot outgrow
it); where ``kubectl`` is installed its own ``kubectl kustomize`` output must equal the loader's.
Every rendered document is validated against Kubernetes 1.34's schemas in strict mode
(kubernetes-validate), and the security claims are checked on the rendered objects.
"""

from __future__ import annotations

import copy
import http.server
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from mcp_gateway.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.34.0"
TREES = ["base", "overlays/dev", "overlays/production"]
GATEWAY_LABELS = {"app.kubernetes.io/name": "mcp-gateway", "app.kubernetes.io/component": "gateway"}
AGENT_LABELS = {"mcp-gateway/role": "agent"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}

Doc = dict[str, Any]


# --- a minimal kustomize ------------------------------------------------------------------------


def render(directory: Path) -> list[Doc]:
    """The documents ``kustomize build directory`` makes, for the subset of kustomize used here."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator", "generatorOptions"}
    unknown = set(kust) - supported - {"images", "patches"}
    assert not unknown, f"{directory}: the test loader does not support {sorted(unknown)}"
    docs: list[Doc] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    options = kust.get("generatorOptions", {})
    assert set(options) <= {"disableNameSuffixHash", "labels"}
    for gen in kust.get("configMapGenerator", []):
        assert set(gen) <= {"name", "files", "behavior"}
        data = {Path(f).name: (directory / f).read_text() for f in gen["files"]}
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            assert options.get("disableNameSuffixHash") is True, "name hashes are not implemented"
            meta: Doc = {"name": gen["name"]}
            if options.get("labels"):
                meta["labels"] = dict(options["labels"])
            docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        else:
            assert behavior == "replace", behavior
            (target,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"]]
            target["data"] = data
    for image in kust.get("images", []):
        assert set(image) <= {"name", "newName", "newTag"}
        for doc in docs:
            for container in _containers(doc):
                name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for patch in kust.get("patches", []):
        assert set(patch) == {"target", "patch"} and set(patch["target"]) == {"kind", "name"}
        targets = [
            d
            for d in docs
            if d["kind"] == patch["target"]["kind"] and d["metadata"]["name"] == patch["target"]["name"]
        ]
        assert len(targets) == 1, patch["target"]
        for op in yaml.safe_load(patch["patch"]):
            _json_patch(targets[0], op)
    if "namespace" in kust:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kust["namespace"]
    return docs


def _json_patch(doc: Doc, op: Doc) -> None:
    """One RFC 6902 ``add``/``replace``/``remove`` operation (the ones the overlays use)."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "replace":
        assert key in node if isinstance(node, dict) else key < len(node), op  # replace needs a target
        node[key] = op["value"]
    elif op["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else key, op["value"])
        else:
            node[key] = op["value"]
    else:
        assert op["op"] == "remove", op
        del node[key]


def _containers(doc: Doc) -> list[Doc]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


@pytest.fixture(scope="module", params=TREES)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(KUBE / request.param)


def _one(docs: list[Doc], kind: str, name: str = "mcp-gateway") -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


# --- schemas and the loader itself -------------------------------------------------------------


def test_every_rendered_document_is_valid_against_the_kubernetes_schemas_in_strict_mode(
    rendered: tuple[str, list[Doc]],
) -> None:
    tree, docs = rendered
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{tree}: {_key(doc)}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_strict_validation_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(_one(render(KUBE / "base"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystm"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("tree", TREES)
def test_the_loader_renders_what_kubectl_kustomize_renders(tree: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the loader's output is not cross-checked")
    run = subprocess.run(
        [kubectl, "kustomize", str(KUBE / tree)], capture_output=True, text=True, timeout=120, check=True
    )
    theirs = {_key(d): d for d in yaml.safe_load_all(run.stdout) if d}
    ours = {_key(d): d for d in render(KUBE / tree)}
    assert ours == theirs


# --- the gateway's workload --------------------------------------------------------------------


def test_the_gateway_runs_non_root_read_only_without_capabilities_or_escalation(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's fixed uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Writable: only the data dir and /tmp, both emptyDirs.
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert sorted(m["mountPath"] for m in writable) == ["/tmp", "/var/lib/mcp-gateway"]
    assert all("emptyDir" in volumes[m["name"]] for m in writable)
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    service_account = _one(docs, "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False


def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080}


def test_the_base_runs_three_replicas_with_a_budget_and_an_autoscaler() -> None:
    docs = render(KUBE / "base")
    assert _one(docs, "Deployment")["spec"]["replicas"] == 3
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mcp-gateway",
    }
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
    assert _one(docs, "Service")["spec"]["selector"] == GATEWAY_LABELS


def test_the_master_key_is_a_secret_reference_and_no_secret_value_is_committed(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "MCP_GATEWAY_MASTER_KEY" not in env
    key_path = env["MCP_GATEWAY_MASTER_KEY_FILE"]["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if key_path.startswith(m["mountPath"] + "/")]
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "mcp-gateway-master-key"
    # Group-readable for fsGroup, never by others (MCP_GATEWAY_MASTER_KEY_FILE refuses that).
    assert secret["defaultMode"] & 0o007 == 0 and pod["securityContext"]["fsGroup"] == 10001
    for name, entry in env.items():
        if re.search("KEY|PASSWORD|TOKEN|SECRET", name) and name != "MCP_GATEWAY_MASTER_KEY_FILE":
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name


def test_the_redis_password_is_a_file_from_a_secret_that_every_gateway_yaml_names(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in (KUBE / "base" / "gateway.yaml", KUBE / "overlays" / "production" / "gateway.yaml"):
        file = str(load_settings(path).quotas.redis_password_file)
        (mount,) = [m for m in container["volumeMounts"] if file.startswith(m["mountPath"] + "/")]
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "mcp-gateway-redis" and mount["readOnly"] is True
        assert [(i["key"], f"{mount['mountPath']}/{i['path']}") for i in secret["items"]] == [
            ("password", file)
        ]
        # Group-readable for fsGroup, never by others (quotas.redis_password_file refuses that).
        assert secret["defaultMode"] & 0o007 == 0


def test_every_gateway_yaml_loads_as_valid_settings_with_no_inline_secret(tmp_path: Path) -> None:
    files = [
        DEPLOY / "compose" / "gateway.yaml",
        KUBE / "base" / "gateway.yaml",
        KUBE / "overlays" / "production" / "gateway.yaml",
    ]
    for path in files:
        settings = load_settings(path)
        assert settings.server.host == "0.0.0.0" and settings.server.port == 8080  # noqa: S104
        assert settings.vault.key_file is None, "the key comes from MCP_GATEWAY_MASTER_KEY_FILE"
        assert settings.quotas.store == "redis"
        assert settings.audit.backend == "postgres"  # every store on PostgreSQL via `store:`
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", path.read_text()), f"{path}: password in a URL"


# --- network policies --------------------------------------------------------------------------


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a label selector selects a pod with these labels (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and value in expr["values"])
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return True


def _egress_rules(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [
        rule
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "Egress" in d["spec"]["policyTypes"]
        and _selects(d["spec"]["podSelector"], labels)
        for rule in d["spec"].get("egress", [])
    ]


def _ingress_rules(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [
        rule
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "Ingress" in d["spec"]["policyTypes"]
        and _selects(d["spec"]["podSelector"], labels)
        for rule in d["spec"].get("ingress", [])
    ]


def _ports(rule: Doc) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}


DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}  # fmt: skip


def agent_egress_problems(docs: list[Doc]) -> list[str]:
    """Every way an agent pod may reach something other than the gateway's port or DNS."""
    problems = []
    for rule in _egress_rules(docs, AGENT_LABELS):
        if not rule.get("to") or not rule.get("ports"):
            problems.append(f"a rule open to every destination or port: {rule}")
            continue
        for peer in rule["to"]:
            if set(peer) == {"podSelector"} and peer["podSelector"] == {"matchLabels": GATEWAY_LABELS}:
                if _ports(rule) != {(8080, "TCP")}:
                    problems.append(f"gateway pods on ports {_ports(rule)}")
            elif peer == DNS:
                if _ports(rule) - {(53, "UDP"), (53, "TCP")}:
                    problems.append(f"DNS pods on ports {_ports(rule)}")
            else:
                problems.append(f"a destination other than the gateway or DNS: {peer}")
    return problems


def test_the_namespace_denies_all_traffic_by_default(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deny = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {}
        and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
    ]
    assert len(deny) == 1
    # No other policy opens anything to every pod.
    opened = [
        d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] == {} and d not in deny
    ]
    assert opened == []


def test_agents_may_reach_only_the_gateway_port_and_dns(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert agent_egress_problems(docs) == []
    # And they do reach both (the policy is not just empty).
    peers = [peer for rule in _egress_rules(docs, AGENT_LABELS) for peer in rule["to"]]
    assert {"podSelector": {"matchLabels": GATEWAY_LABELS}} in peers and DNS in peers


@pytest.mark.parametrize(
    "widen",
    [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}}}],
         "ports": [{"port": 5432, "protocol": "TCP"}]},
        {"to": [{"podSelector": {"matchLabels": GATEWAY_LABELS}}], "ports": [{"port": 9090}]},
        {"to": [{"namespaceSelector": {}}], "ports": [{"port": 8080}]},
    ],
)  # fmt: skip
def test_a_policy_that_widens_agents_egress_is_caught(widen: Doc) -> None:
    docs = render(KUBE / "overlays" / "production")
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "oops"},
            "spec": {
                "podSelector": {"matchLabels": AGENT_LABELS},
                "policyTypes": ["Egress"],
                "egress": [widen],
            },
        }
    )
    assert agent_egress_problems(docs)


def test_the_gateway_accepts_only_agents_and_the_ingress_controller_on_its_port(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    rules = _ingress_rules(docs, GATEWAY_LABELS)
    assert rules
    for rule in rules:
        assert _ports(rule) == {(8080, "TCP")}
        for peer in rule["from"]:
            assert peer in (
                {"podSelector": {"matchLabels": AGENT_LABELS}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
            ), peer
    # An unlabelled pod in the namespace is not among them.
    assert not [r for r in rules for p in r["from"] if "podSelector" in p and _selects(p["podSelector"], {})]


def test_the_gateway_reaches_only_its_stores_dns_and_named_upstreams(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    allowed_ports = {
        "postgresql": {(5432, "TCP")},
        "redis": {(6379, "TCP")},
    }
    for rule in _egress_rules(docs, GATEWAY_LABELS):
        assert rule.get("to") and rule.get("ports"), rule
        for peer in rule["to"]:
            if "ipBlock" in peer:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert network.prefixlen >= 8, f"upstream range too wide: {network}"
            elif peer == DNS:
                assert _ports(rule) <= {(53, "UDP"), (53, "TCP")}
            else:
                name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                assert set(peer) == {"podSelector"} and _ports(rule) == allowed_ports[name]


# --- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Doc:
    text = (DEPLOY / "compose.yaml").read_text()
    # `docker compose config` needs the compose plugin, which these machines lack: parse the YAML
    # (anchors and merge keys included) and check the same things.
    parsed: Doc = yaml.safe_load(text)
    return parsed


def _gateways(compose: Doc) -> dict[str, Doc]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith("gateway-")}


def test_compose_runs_three_gateways_postgresql_redis_and_haproxy(compose: Doc) -> None:
    assert set(compose["services"]) == {"gateway-1", "gateway-2", "gateway-3", "haproxy", "postgres", "redis"}
    for svc in _gateways(compose).values():
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert compose["networks"]["back"]["internal"] is True
    assert "back" not in compose["services"]["haproxy"]["networks"]


def test_every_compose_service_has_a_healthcheck(compose: Doc) -> None:
    for name, svc in compose["services"].items():
        assert svc.get("healthcheck", {}).get("test"), name


def test_compose_gateways_are_read_only_non_root_and_write_only_to_their_volume_and_tmpfs(
    compose: Doc,
) -> None:
    volumes = set()
    for name, svc in _gateways(compose).items():
        assert svc["read_only"] is True, name
        assert svc["user"] == "10001:10001", name
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
        assert [t.split(":")[0] for t in svc["tmpfs"]] == ["/tmp"]
        writable = [v for v in svc["volumes"] if not v.endswith(":ro")]
        (data,) = writable
        volume, target = data.split(":")
        assert target == "/var/lib/mcp-gateway" and volume in compose["volumes"]
        volumes.add(volume)
    assert len(volumes) == 3  # one data volume per replica


def test_compose_takes_the_master_key_and_passwords_from_secret_files_never_literals(compose: Doc) -> None:
    for name, svc in _gateways(compose).items():
        env = svc["environment"]
        assert "MCP_GATEWAY_MASTER_KEY" not in env and "PGPASSWORD" not in env
        for var, secret in (("MCP_GATEWAY_MASTER_KEY_FILE", "master_key"), ("PGPASSFILE", "pgpass")):
            assert env[var] == f"/run/secrets/{secret}" and secret in svc["secrets"], (name, var)
    gateway_yaml = load_settings(DEPLOY / "compose" / "gateway.yaml")
    assert str(gateway_yaml.quotas.redis_password_file) == "/run/secrets/redis_password"
    for name, svc in _gateways(compose).items():
        assert "redis_password" in svc["secrets"], name
    # Redis requires the password: its configuration is a secret file, and its health check
    # authenticates from that file (a Redis that answered without it would fail the check).
    redis = compose["services"]["redis"]
    assert redis["command"] == ["redis-server", "/run/secrets/redis_conf"] and redis["secrets"] == [
        "redis_conf"
    ]
    kind, check = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "REDISCLI_AUTH=" in check and "/run/secrets/redis_conf" in check
    assert "requirepass" in (DEPLOY / "compose" / "make-secrets.sh").read_text()
    postgres = compose["services"]["postgres"]["environment"]
    assert (
        "POSTGRES_PASSWORD" not in postgres
        and postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    )
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./compose/secrets/")
    # The secret files are ignored by git.
    assert "secrets/" in (DEPLOY / "compose" / ".gitignore").read_text().split()
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"(PASSWORD|MASTER_KEY|TOKEN)\s*[:=]\s*[\"']?[A-Za-z0-9+/_-]{8,}", text)


# --- HAProxy -----------------------------------------------------------------------------------


def _haproxy() -> str:
    """The haproxy binary; .ci/run installs it, so wait a bounded while if an install is under way."""
    deadline = time.monotonic() + 180
    while (found := shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")) is None:
        assert time.monotonic() < deadline, "haproxy is not installed (apt-get install haproxy)"
        time.sleep(2)
    return found


def test_haproxy_accepts_the_configuration() -> None:
    run = subprocess.run(
        [_haproxy(), "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    warnings = [ln for ln in run.stderr.splitlines() if "[WARNING]" in ln or "[ALERT]" in ln]
    # Outside compose the replicas' names do not resolve; nothing else may be warned about.
    assert all("could not resolve address 'gateway-" in ln for ln in warnings), warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Replica(http.server.ThreadingHTTPServer):
    """A stand-in replica: /readyz 200; a POST without a session id gets a new one in the answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions = 0
        super().__init__(("127.0.0.1", 0), _ReplicaHandler)


class _ReplicaHandler(http.server.BaseHTTPRequestHandler):
    server: _Replica

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        if self.command == "POST" and not self.headers.get("Mcp-Session-Id"):
            self.server.sessions += 1
            self.send_header("Mcp-Session-Id", f"{self.server.name}-{self.server.sessions:04d}")
        body = self.server.name.encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def haproxy_in_front(tmp_path: Path) -> Iterator[str]:
    """deploy/haproxy.cfg with the compose names replaced by three local replicas; yields its URL."""
    replicas = [_Replica(f"gateway-{i}") for i in (1, 2, 3)]
    for replica in replicas:
        threading.Thread(target=replica.serve_forever, daemon=True).start()
    port = _free_port()
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{port}")
    cfg = cfg.replace("inter 5s", "inter 100ms").replace(" resolvers docker init-addr last,libc,none", "")
    for i, replica in enumerate(replicas, 1):
        cfg = cfg.replace(f"gateway-{i}:8080", f"127.0.0.1:{replica.server_address[1]}")
    assert "gateway-1:8080" not in cfg and f"127.0.0.1:{port}" in cfg
    (tmp_path / "haproxy.cfg").write_text(cfg)
    proc = subprocess.Popen(
        [_haproxy(), "-db", "-f", str(tmp_path / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/haproxy-health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for replica in replicas:
            replica.shutdown()
            replica.server_close()


@pytest.mark.e2e
def test_haproxy_sends_every_request_of_a_session_to_the_replica_that_created_it(
    haproxy_in_front: str,
) -> None:
    url = f"{haproxy_in_front}/mcp"
    with httpx.Client(timeout=5) as client:
        sessions = {}
        for _ in range(9):  # 2025-11-25 `initialize`: no session id yet, balanced
            answer = client.post(url, content=b"{}")
            sessions[answer.headers["mcp-session-id"]] = answer.text
        assert len(set(sessions.values())) == 3, "new sessions were not spread over the replicas"
        # Out of creation order, with stateless requests moving round-robin along in between, so
        # only the learned session -> replica entry can bring each request to its creator.
        for session, creator in reversed(sessions.items()):
            client.get(url)
            for _ in range(4):
                answer = client.post(url, content=b"{}", headers={"Mcp-Session-Id": session})
                assert answer.text == creator, f"{session} went to {answer.text}"
                assert "mcp-session-id" not in answer.headers
        # 2026-07-28: no session id, any replica; round-robin spreads them.
        stateless = {client.get(url).text for _ in range(6)}
        assert len(stateless) == 3
