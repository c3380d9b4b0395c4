"""JSON Schemas for ``gateway.yaml`` and policy files, generated from the pydantic models that load them.

The ``*.schema.json`` files next to this module ship in the package so editors can validate a config as
it is typed (the YAML language server reads a first line ``# yaml-language-server: $schema=PATH``), and
``mcp-gateway config schema`` prints them. They are generated, never edited: after changing
``config.Settings`` or ``policy.schema.PolicyDocument`` run ``python -m mcp_gateway.schemas``
(``tests/test_schemas.py`` fails until the files match the models).

The models stay the authority: a schema cannot express every validator (upstream name patterns, jobs
naming configured orchestrators, policy ids unique across files), so ``mcp-gateway config check`` is the
full check and the schema is the editor's quick one.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

SchemaName = Literal["gateway", "policy"]
NAMES: Final[tuple[SchemaName, ...]] = ("gateway", "policy")
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
REGENERATE: Final = "python -m mcp_gateway.schemas"

_TITLES: Final[dict[SchemaName, str]] = {
    "gateway": "MCP Gateway configuration (gateway.yaml)",
    "policy": "MCP Gateway policy file (policies/*.yaml)",
}


def file_name(name: SchemaName) -> str:
    return f"{name}.schema.json"


def schema_path(name: SchemaName) -> Path:
    """The shipped schema file (a real file: the package is installed unzipped)."""
    return Path(str(resources.files(__name__) / file_name(name)))


def build(name: SchemaName) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind, from its pydantic model."""
    model: Any
    if name == "gateway":
        from mcp_gateway.config import Settings

        model = Settings
    else:
        from mcp_gateway.policy.schema import PolicyDocument

        model = PolicyDocument
    schema = model.model_json_schema(mode="validation", by_alias=True)
    return {
        "$schema": DRAFT,
        "$comment": f"generated from the pydantic models by `{REGENERATE}`; do not edit",
        "title": _TITLES[name],
        **{k: v for k, v in schema.items() if k != "title"},
    }


def render(name: SchemaName) -> str:
    """``build(name)`` as the text of its file (stable: same models, same bytes)."""
    return json.dumps(build(name), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path | None = None) -> list[Path]:
    """Regenerate every schema file (in the package, or in ``directory``); returns the files written."""
    target = directory or Path(__file__).parent
    written = []
    for name in NAMES:
        path = target / file_name(name)
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    for path in write_all():
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
