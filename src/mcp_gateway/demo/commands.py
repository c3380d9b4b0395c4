"""How printed commands name the ``mcp-gateway`` program, so they run exactly as printed."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def program() -> str:
    """``mcp-gateway`` when that name on PATH is the running program, else the running program's
    absolute path (a venv that is not activated), shell-quoted."""
    here = Path(sys.executable).parent / "mcp-gateway"
    argv0 = Path(sys.argv[0])
    if argv0.name == "mcp-gateway" and argv0.exists():
        here = argv0.absolute()
    if not here.exists():
        return "mcp-gateway"
    found = shutil.which("mcp-gateway")
    if found is not None and Path(found).resolve() == here.resolve():
        return "mcp-gateway"
    return shlex.quote(str(here))
