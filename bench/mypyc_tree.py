"""A compiled hot path, measured (issue 18, item 4): the gateway's hot modules built with mypyc.

Makes a detached git worktree of ``--rev`` in ``--out``, adjusts what mypyc cannot compile (it
refuses ``__slots__`` and frozen dataclass subclasses of interpreted classes; a class the log
redaction holds by weak reference must stay a Python class), and compiles the modules on the
governed path that mypyc accepts. The tree is then measured against the same revision interpreted:

    python bench/mypyc_tree.py --rev HEAD --out /tmp/mypyc-tree
    git worktree add --detach /tmp/base-tree HEAD
    for t in base-tree mypyc-tree; do PYTHONPATH=/tmp/$t/src python bench/telemetry_overhead.py \
        --calls 1000 --rounds 3; done          # in-process Governor.run, CPU µs per call
    python bench/ab.py --base HEAD --new-tree /tmp/mypyc-tree   # the whole gateway, interleaved

Not product code: the compiled tree is never shipped; this only measures what compiling would buy.
Modules mypyc rejects as of mypy 2.4.1 (left interpreted): http/legacy.py (``break`` inside
``try/finally``), http/app.py (async generators), identity/agents.py (multiple inheritance),
vault/store.py (an internal mypyc error), core/limits.py (a C compile error on a pydantic import);
core/gateway.py, core/result.py, core/exchange.py, http/modern.py, http/auth.py, http/methods.py,
http/calls.py and pins/gate.py compile but fail at import (a mypyc string-literal decode error).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    "audit/record",
    "redact/__init__",
    "audit/log",
    "audit/sqlite",
    "audit/seal",
    "audit/writer",
    "core/governed",
    "core/state",
    "http/egress",
    "http/reply",
    "http/session",
    "connectors/mcp/http_client",
    "connectors/mcp/forwarder",
    "connectors/mcp/upstream",
    "policy/evaluate",
    "pins/fresh",
    "quotas/model",
]
NOT_NATIVE = {"core/state.py": "SecretsView", "audit/record.py": "_CleanEvent"}
"""Classes kept as Python classes: held by weak reference, or subclassing an interpreted dataclass."""


def adjust(src: Path) -> None:
    """Drop ``slots=True`` and ``__slots__`` in the package; mark the ``NOT_NATIVE`` classes."""
    for path in (src / "mcp_gateway").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        new = re.sub(r"dataclass\(([^)]*?)(?:, )?slots=True\)", r"dataclass(\1)", text)
        new = re.sub(r"^    __slots__ = \([^)]*\)\n", "", new, flags=re.MULTILINE)
        name = NOT_NATIVE.get(str(path.relative_to(src / "mcp_gateway")))
        if name is not None:
            new = re.sub(
                rf"^((?:@[^\n]*\n)*)class {name}\b",
                rf"@mypyc_attr(native_class=False)\n\1class {name}",
                new,
                count=1,
                flags=re.MULTILINE,
            )
            future = "from __future__ import annotations\n"
            new = new.replace(future, future + "\nfrom mypy_extensions import mypyc_attr\n", 1)
        if new != text:
            path.write_text(new, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument(
        "--out", type=Path, required=True, help="where the compiled worktree goes (must not exist)"
    )
    args = parser.parse_args()
    subprocess.run(["git", "worktree", "add", "--detach", str(args.out), args.rev], cwd=ROOT, check=True)
    src = args.out / "src"
    adjust(src)
    mypyc = Path(sys.executable).parent / "mypyc"
    files = [f"mcp_gateway/{m}.py" for m in MODULES]
    subprocess.run([str(mypyc), *files], cwd=src, check=True)
    check = "import importlib,sys;[importlib.import_module(m) for m in sys.argv[1:]]"
    names = [f"mcp_gateway.{m.replace('/', '.').removesuffix('.__init__')}" for m in MODULES]
    subprocess.run(
        [sys.executable, "-c", check, *names], cwd=args.out, env={"PYTHONPATH": str(src)}, check=True
    )
    print(f"compiled {len(MODULES)} modules in {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
