"""Agent sandboxes built from Linux network namespaces: the agent's only way out is the gateway.

A sandbox is a network namespace ``mgw-agent-<pid>-<hex>`` joined to the root namespace by one veth pair
on a private /30 (host end ``mgwh-<hex>`` holds the gateway's address, the agent end ``eth0`` the
other one). Two layers of nftables rules guard it:

- inside the namespace (:meth:`Sandbox.agent_rules`): output and input policy drop; out only to the
  gateway's address and port, in only replies; the only route is the /30 link, so nothing else is
  even routable;
- on the host (:meth:`Sandbox.host_rules`): whatever arrives on the host end that is not a new
  connection to the gateway's address and port, or a reply, is dropped, and nothing from it is
  forwarded. This layer holds even if the agent gets root inside its namespace and deletes its own
  rules, like a Kubernetes NetworkPolicy, enforced by the node rather than the pod.

Deleting the namespace destroys the veth pair and the namespace's rules; the host table is deleted
by name. Names carry the creating process's id, so :func:`remove_stale` removes only the leftovers of
runs whose process is gone, never a concurrent run's sandbox.

Run as a script (inside a sandbox, as the agent) it probes: ``probe``, ``udp``, ``dns`` and ``mcp``
print one JSON document each; see :func:`main`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETNS_PREFIX = "mgw-agent-"
HOST_TABLE_PREFIX = "mgw_"
AGENT_TABLE = "mgw_sandbox"
_NETNS_NAME = re.compile(rf"^{NETNS_PREFIX}(\d+)-[0-9a-f]+$")
_HOST_TABLE_NAME = re.compile(rf"^{HOST_TABLE_PREFIX}(\d+)_[0-9a-f]+$")
# Private space for the links; every /30 in it is checked against the machine's addresses and routes.
_POOL = ipaddress.IPv4Network("10.200.0.0/16")

BLOCKED = frozenset({"timeout", "unreachable", "refused", "denied"})
"""Probe outcomes that mean "no connection was made"."""


class SandboxUnavailable(Exception):
    """This machine cannot build sandboxes at all (not Linux, not root, no ``ip netns``)."""


def _run(
    argv: Sequence[str], *, timeout: float = 10.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


_SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def tool(name: str) -> str:
    """The absolute path of the system tool ``name`` (``ip``, ``nft``, ``setpriv``).

    Raises:
        RuntimeError: it is not installed (a broken set-up, not a reason to skip).
    """
    found = shutil.which(name, path=_SBIN_PATH)
    if found is None:
        raise RuntimeError(f"`{name}` is not installed (Debian: iproute2, nftables, util-linux)")
    return found


def check_available(nft_wait: float = 180.0) -> None:
    """Raise :class:`SandboxUnavailable` unless sandboxes can be built here (Linux, root, ``ip netns``).

    ``nft`` may still be being installed when a run starts, so it is waited for up to ``nft_wait``
    seconds (a bounded poll); still missing then is an error, not a skip: CI installs it.
    """
    if sys.platform != "linux":
        raise SandboxUnavailable("network namespaces need Linux")
    if os.geteuid() != 0:
        raise SandboxUnavailable("building network namespaces needs root")
    ip = shutil.which("ip", path=_SBIN_PATH)
    if ip is None or _run([ip, "netns", "list"], check=False).returncode != 0:
        raise SandboxUnavailable("`ip netns` is not available (Debian: iproute2)")
    deadline = time.monotonic() + nft_wait
    while shutil.which("nft", path=_SBIN_PATH) is None:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"`nft` is not installed after {nft_wait:.0f}s (Debian: nftables)")
        time.sleep(1.0)  # an install in progress: a bounded poll, not a wait in a test's logic
    tool("setpriv")


def _used_networks() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    for link in json.loads(_run([tool("ip"), "-j", "-4", "addr"]).stdout):
        for info in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_run([tool("ip"), "-j", "-4", "route", "show", "table", "all"]).stdout):
        dst = route.get("dst", "default")
        if dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    for server in nameservers():
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(server)
            if isinstance(address, ipaddress.IPv4Address):
                used.append(ipaddress.IPv4Network(f"{address}/32"))
    return used


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The name servers ``resolv_conf`` lists (what the agent's resolver would ask)."""
    try:
        lines = resolv_conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]


def free_link_network(attempts: int = 64) -> ipaddress.IPv4Network:
    """A random /30 from 10.200.0.0/16 that overlaps no address, route or name server of this machine."""
    used = _used_networks()
    blocks = 1 << (30 - _POOL.prefixlen)
    for _ in range(attempts):
        start = int(_POOL.network_address) + 4 * secrets.randbelow(blocks)
        candidate = ipaddress.IPv4Network((start, 30))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /30 in {_POOL} after {attempts} attempts")


@dataclass(frozen=True)
class Sandbox:
    """One built sandbox: names and addresses (see the module docstring)."""

    netns: str
    host_if: str
    host_table: str
    network: ipaddress.IPv4Network
    host_ip: str
    agent_ip: str

    def agent_rules(self, gateway_port: int) -> str:
        """The nftables ruleset loaded inside the agent's namespace (``nft -f`` text)."""
        return (
            f"table inet {AGENT_TABLE} {{\n"
            "  chain output {\n"
            "    type filter hook output priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            f"    ip daddr {self.host_ip} tcp dport {gateway_port} accept\n"
            "    counter drop\n"
            "  }\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            "    counter drop\n"
            "  }\n"
            "}\n"
        )

    def host_rules(self, gateway_port: int) -> str:
        """The nftables table loaded in the root namespace; it matches only this sandbox's interface."""
        dev = f'iifname "{self.host_if}"'
        return (
            f"table inet {self.host_table} {{\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            f"    {dev} ct state established,related accept\n"
            f"    {dev} ip daddr {self.host_ip} tcp dport {gateway_port} ct state new accept\n"
            f"    {dev} counter drop\n"
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f"    {dev} counter drop\n"
            "  }\n"
            "}\n"
        )

    def in_netns(self, argv: Sequence[str], *, as_agent: bool = True) -> list[str]:
        """``argv`` run inside the namespace; as the agent: with no capabilities at all.

        The agent keeps uid 0 but loses every capability for good (empty bounding, inheritable and
        ambient sets; ``noroot`` locked, so no exec gives them back; ``no_new_privs``): without
        CAP_NET_ADMIN it cannot touch the namespace's rules, routes or addresses, and without
        CAP_NET_RAW it opens no raw socket. Not uid ``nobody``: the venv's interpreter may live under
        a 0700 home (pyenv, uv) that ``nobody`` cannot read.
        """
        prefix = [tool("ip"), "netns", "exec", self.netns]
        if as_agent:
            prefix += [
                tool("setpriv"),
                "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked,+keep_caps_locked",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return [*prefix, *argv]

    def run(
        self, argv: Sequence[str], *, as_agent: bool = True, timeout: float = 15.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.in_netns(argv, as_agent=as_agent), timeout=timeout, check=check)

    def load_agent_rules(self, gateway_port: int) -> None:
        """(Re)load the namespace's table atomically: declare, delete, define in one transaction."""
        declare = f"table inet {AGENT_TABLE} {{}}\ndelete table inet {AGENT_TABLE}\n"
        text = declare + self.agent_rules(gateway_port)
        _nft_load(text, netns=self.netns)

    def drop_agent_rules(self) -> None:
        """Delete the namespace's table (what an agent with root in its namespace could do)."""
        self.run([tool("nft"), "delete", "table", "inet", AGENT_TABLE], as_agent=False)

    def load_host_rules(self, gateway_port: int) -> None:
        text = (
            f"table inet {self.host_table} {{}}\ndelete table inet {self.host_table}\n"
            f"{self.host_rules(gateway_port)}"
        )
        _nft_load(text, netns=None)

    def agent_ruleset(self) -> str:
        return self.run([tool("nft"), "list", "ruleset"], as_agent=False).stdout

    def agent_drops(self) -> int:
        """Packets the namespace's ``counter drop`` rules have dropped so far."""
        return _counted(
            self.run([tool("nft"), "-j", "list", "table", "inet", AGENT_TABLE], as_agent=False).stdout
        )

    def host_drops(self) -> int:
        """Packets the host table's ``counter drop`` rules have dropped so far."""
        return _counted(_run([tool("nft"), "-j", "list", "table", "inet", self.host_table]).stdout)

    def routes(self) -> list[dict[str, Any]]:
        """Every IPv4 and IPv6 route in the namespace, all tables."""
        found: list[dict[str, Any]] = []
        for family in ("-4", "-6"):
            out = self.run([tool("ip"), "-j", family, "route", "show", "table", "all"], as_agent=False).stdout
            found += [r for r in json.loads(out or "[]") if r.get("type", "unicast") == "unicast"]
        return found


def _nft_load(text: str, *, netns: str | None) -> None:
    argv = [tool("nft"), "-f", "-"]
    if netns is not None:
        argv = [tool("ip"), "netns", "exec", netns, *argv]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nft refused the ruleset: {done.stderr.strip()}")


def _counted(nft_json: str) -> int:
    total = 0
    for item in json.loads(nft_json)["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


def create() -> Sandbox:
    """Build a sandbox: namespace, veth pair (peer created directly inside), addresses, lo up, IPv6 off.

    No rules are loaded yet (callers probe first, then load them). On any failure the half-built
    sandbox is destroyed before the error propagates.
    """
    ip = tool("ip")
    run_id = secrets.token_hex(3)
    network = free_link_network()
    host_ip, agent_ip = (str(a) for a in network.hosts())
    sandbox = Sandbox(
        netns=f"{NETNS_PREFIX}{os.getpid()}-{run_id}",
        host_if=f"mgwh-{run_id}",
        host_table=f"{HOST_TABLE_PREFIX}{os.getpid()}_{run_id}",
        network=network,
        host_ip=host_ip,
        agent_ip=agent_ip,
    )
    try:
        _run([ip, "netns", "add", sandbox.netns])
        # The agent end is born inside the namespace: no window where a crash leaves it in the root one.
        veth = ["type", "veth", "peer", "name", "eth0", "netns", sandbox.netns]
        _run([ip, "link", "add", sandbox.host_if, *veth])
        # IPv4 only: no link-local IPv6 path between the two ends (the inet tables would drop it anyway).
        _disable_ipv6(Path(f"/proc/sys/net/ipv6/conf/{sandbox.host_if}/disable_ipv6"))
        sandbox.run([sys.executable, "-I", __file__, "no-ipv6"], as_agent=False)
        _run([ip, "addr", "add", f"{host_ip}/{network.prefixlen}", "dev", sandbox.host_if])
        _run([ip, "link", "set", sandbox.host_if, "up"])
        ns = [ip, "-n", sandbox.netns]
        _run([*ns, "addr", "add", f"{agent_ip}/{network.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "link", "set", "lo", "up"])
    except BaseException:
        destroy(sandbox)
        raise
    return sandbox


def _disable_ipv6(knob: Path) -> None:
    # A kernel without IPv6 has no knob, and nothing to disable.
    with contextlib.suppress(FileNotFoundError):
        knob.write_text("1", encoding="ascii")


def destroy(sandbox: Sandbox) -> None:
    """Remove the sandbox: end the processes still inside, delete the namespace and the host table."""
    _remove_netns(sandbox.netns)
    _run([tool("nft"), "delete", "table", "inet", sandbox.host_table], check=False)
    # The veth pair goes with the namespace; this only matters if the namespace could not be deleted.
    _run([tool("ip"), "link", "delete", sandbox.host_if], check=False)


def _remove_netns(name: str) -> None:
    ip = tool("ip")
    pids = _run([ip, "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run([ip, "netns", "delete", name], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Remove sandboxes (namespaces, host tables) left by earlier runs whose process is gone."""
    removed: list[str] = []
    listed = _run([tool("ip"), "-j", "netns", "list"], check=False).stdout or "[]"
    for entry in json.loads(listed):
        match = _NETNS_NAME.match(entry["name"])
        if match and not _alive(int(match.group(1))):
            _remove_netns(entry["name"])
            removed.append(entry["name"])
    tables = _run([tool("nft"), "-j", "list", "tables", "inet"], check=False).stdout or '{"nftables": []}'
    for item in json.loads(tables)["nftables"]:
        name = item.get("table", {}).get("name", "")
        match = _HOST_TABLE_NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _run([tool("nft"), "delete", "table", "inet", name], check=False)
            removed.append(name)
    return removed


# ---- probes, run inside the sandbox as the agent --------------------------------------------------


def _outcome(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return {
        errno.ECONNREFUSED: "refused",
        errno.ENETUNREACH: "unreachable",
        errno.EHOSTUNREACH: "unreachable",
        errno.EPERM: "denied",
        errno.EACCES: "denied",
    }.get(exc.errno or 0, errno.errorcode.get(exc.errno or 0, "error"))


def connect_outcome(host: str, port: int, timeout: float = 1.0) -> str:
    """``connected`` or why not (``timeout``, ``refused``, ``unreachable``, ``denied``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError as exc:
            return _outcome(exc)
        return "connected"


def connect_outcomes(targets: Sequence[tuple[str, int]], timeout: float = 1.0) -> list[str]:
    """:func:`connect_outcome` for every target, all at once (the run lasts about one timeout)."""
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda t: connect_outcome(t[0], t[1], timeout), targets))


_DNS_QUERY = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")  # A example.com


def udp_dns_outcome(host: str, port: int = 53, timeout: float = 1.0) -> str:
    """Send one DNS query to ``host``: ``answered`` or why not."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(_DNS_QUERY, (host, port))
            sock.recvfrom(512)
        except OSError as exc:
            return _outcome(exc)
        return "answered"


def _initialize_status(url: str, token: str) -> dict[str, Any]:
    """POST one bare ``initialize`` with ``token``: the HTTP status and ``WWW-Authenticate``."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "sandbox-probe", "version": "1"},
        },
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("POST", parts.path, json.dumps(body), headers)
        response = conn.getresponse()
        response.read()
        return {"status": response.status, "www_authenticate": response.getheader("WWW-Authenticate")}
    finally:
        conn.close()


def _mcp_session(url: str, token: str) -> dict[str, Any]:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> dict[str, Any]:
        with anyio.fail_after(45):  # generous: a loaded CI machine, not an expected wait
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
                transport = streamable_http_client(url, http_client=http)
                async with Client(transport, mode="legacy") as client:
                    protocol = client.protocol_version  # set by the initialize handshake
                    server = client.server_info.name if client.server_info else None
                    tools = await client.list_tools()
                    echoed = await client.call_tool("leaky.echo", {"text": "from the sandbox"})
            return {
                "server": server,
                "protocol": protocol,
                "tools": sorted(t.name for t in tools.tools),
                "echo": [getattr(c, "text", None) for c in echoed.content],
                "echo_error": bool(echoed.is_error),
            }

    return anyio.run(session)


def main(argv: Sequence[str]) -> int:
    """``probe '[["h", p], ...]'`` | ``udp HOST`` | ``dns NAME`` | ``mcp URL TOKEN`` |
    ``initialize URL TOKEN`` | ``whoami`` | ``no-ipv6``;
    prints JSON."""
    mode, *rest = argv
    result: Any
    if mode == "probe":
        targets = [(str(h), int(p)) for h, p in json.loads(rest[0])]
        result = connect_outcomes(targets)
    elif mode == "udp":
        result = udp_dns_outcome(rest[0])
    elif mode == "dns":
        started = time.monotonic()
        try:
            socket.getaddrinfo(rest[0], 443)
            outcome = "resolved"
        except OSError as exc:
            outcome = f"failed: {exc}"
        result = {"outcome": outcome, "seconds": round(time.monotonic() - started, 3)}
    elif mode == "mcp":
        result = _mcp_session(rest[0], rest[1])
    elif mode == "initialize":
        result = _initialize_status(rest[0], rest[1])
    elif mode == "whoami":
        status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
        result = dict(line.split(":\t", 1) for line in status if line.startswith(("Cap", "NoNewPrivs")))
    elif mode == "no-ipv6":  # run as root inside a new namespace by `create`
        for knob in ("all", "default"):
            _disable_ipv6(Path(f"/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"))
        result = "ok"
    else:
        raise SystemExit(f"unknown mode `{mode}`")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
