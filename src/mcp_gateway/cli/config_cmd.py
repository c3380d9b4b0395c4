"""``mcp-gateway config``: check a whole gateway config (settings and policies) before serving it, and
print the JSON Schemas editors validate the files with.

``config check`` reports every problem it finds, each as ``file:line: message``: the settings (every
pydantic error, located in the YAML), every policy file (as ``policy check`` does), grants naming tools
under no configured upstream or built-in toolset, the master key (present, 0600, well-formed), every
``secret://NAME`` the config names (held by the vault: its names are read, no key is needed) and the
data dir (writable). It opens no store for writing (the pin store and the vault's names only
read-only, when they exist), starts no upstream and prints no value from the files: only key names,
secret names, paths and the models' own messages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
import yaml

from mcp_gateway.cli.common import ConfigOpt, fail

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from mcp_gateway.config import Settings
    from mcp_gateway.policy.model import Policy

config_app = typer.Typer(help="Check a gateway config and its policies.", no_args_is_help=True)

_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"

    @classmethod
    def parse(cls, text: str, severity: Literal["error", "warning"] = "error") -> Problem:
        """A ``file:line: message`` string (as policy loading formats them) as a Problem."""
        match = _LOCATED.match(text)
        if match is None:
            file, _, message = text.partition(": ")
            return cls(file, None, message or text, severity)
        return cls(match["file"], int(match["line"]), match["message"], severity)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    return _locate(root, loc)[0]


def _locate(root: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[int, tuple[int | str, ...]]:
    """The 1-based line of the deepest node of ``loc`` present in the YAML tree (1 if none).

    Parts of a pydantic location that are not in the YAML (a union's tag, ``[key]`` of a dict key
    error) are skipped, so the line is that of the nearest key the admin wrote.
    """
    node, line, found = root, 1, list[int | str]()
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                continue
            line, node = match[0].start_mark.line + 1, match[1]
            found.append(part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            found.append(part)
    if loc and (not found or found[-1] != loc[-1]):
        found.append(loc[-1])  # a missing key: named, at the line of its parent
    return (line if root is not None else 1), tuple(found)


def _message(err: ErrorDetails, loc: tuple[int | str, ...], values: set[str]) -> str:
    """One pydantic error as a message naming the key, never the value written there (``error_text``)."""
    from mcp_gateway.config import error_text

    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key `{dotted}`"
    return f"`{dotted}`: {error_text(err, values)}"


def _settings_problems(path: Path) -> tuple[Settings | None, list[Problem]]:
    """Validate ``gateway.yaml``; every error is located (the file's own checks run last)."""
    from pydantic import ValidationError

    from mcp_gateway.config import Settings, load_settings, scalar_values
    from mcp_gateway.errors import ConfigError

    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(file, None, f"cannot read: {exc.strerror}")]
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(file, line, f"invalid yaml: {getattr(exc, 'problem', None) or 'unparsable'}")]
    if raw is not None and not isinstance(raw, dict):
        return None, [Problem(file, 1, "the top level must be a mapping")]
    try:
        Settings.model_validate(dict(raw or {}))
    except ValidationError as exc:
        values = scalar_values(raw)
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err["loc"])
            line, found = _locate(root, loc)
            problems.append(Problem(file, line, _message(err, found, values)))
        return None, problems
    try:
        # The loader itself: relative paths resolved, and the checks across sections (prefixes).
        return load_settings(path), []
    except ConfigError as exc:
        return None, [Problem.parse(str(exc))]


def _grant_problems(policy: Policy, settings: Settings, builtin: Any) -> list[Problem]:
    """Grants that name no configured upstream (errors) and, when the pin store exists, grants that
    match nothing the upstreams last listed (warnings)."""
    from mcp_gateway.policy.catalog import UpstreamCatalog, check_catalog
    from mcp_gateway.policy.model import is_glob

    prefixes = {
        name: up.prefix if up.prefix is not None else f"{name}." for name, up in settings.upstreams.items()
    }
    builtin_prefixes = tuple(f"{toolset}." for toolset in builtin)
    problems: list[Problem] = []
    for grants in policy.agents.values():
        for grant in grants:
            tool = grant.tool
            head = tool[: min((i for i, ch in enumerate(tool) if ch in "*?["), default=len(tool))]
            if tool.startswith("resource:"):
                owner = tool.split(":", 2)[1] if tool.count(":") >= 2 else ""
                if is_glob(owner) or owner == "gateway" or owner in prefixes:
                    continue
                message = f"grant `{grant.id}` names resources of upstream `{owner}`, which is not configured"
            else:
                name = tool.removeprefix("prompt:")
                head = head.removeprefix("prompt:")
                if name.startswith(builtin_prefixes) or any(
                    head.startswith(p) or (is_glob(name) and p.startswith(head)) for p in prefixes.values()
                ):
                    continue
                kind = "prompt" if tool.startswith("prompt:") else "tool"
                known = ", ".join(f"`{p}`" for p in sorted({*prefixes.values(), *builtin_prefixes}))
                message = (
                    f"grant `{grant.id}` names {kind} `{name}`, under no configured upstream's prefix"
                    f" or built-in toolset (known: {known or 'none'}); it grants nothing"
                )
            problems.append(Problem.parse(f"{grant.source or settings.policies}: {message}"))
    pins = settings.data_path(settings.pinning.path)
    if pins.is_file():
        from mcp_gateway.cli.policy import pinned_catalog
        from mcp_gateway.errors import GatewayError

        try:
            catalog: dict[str, UpstreamCatalog] = pinned_catalog(settings)
        except GatewayError as exc:
            return [*problems, Problem(str(pins), None, str(exc), "warning")]
        findings = check_catalog(policy, builtin, catalog)
        # The catalog check knows tools only: resource grants (judged above) would all look unknown.
        resources = {
            f"grant `{g.id}` "
            for grants in policy.agents.values()
            for g in grants
            if g.tool.startswith(("resource:", "prompt:"))
        }
        problems.extend(
            Problem.parse(w, "warning")
            for w in findings.warnings
            if "under no built-in toolset" not in w and not any(r in w for r in resources)
        )
    return problems


def _policy_problems(settings: Settings) -> list[Problem]:
    from mcp_gateway.app.toolsets import builtin_tool_names
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.load import load_policy

    builtin = builtin_tool_names()
    try:
        policy = load_policy(settings.policies, builtin_tools=builtin)
    except PolicyLoadError as exc:
        return [Problem.parse(p) for p in exc.problems]
    return _grant_problems(policy, settings, builtin)


def _config_line(config: Path, *keys: str) -> int:
    try:
        return _line_of(yaml.compose(config.read_text(encoding="utf-8")), keys)
    except (OSError, yaml.YAMLError):
        return 1


def _key_problems(settings: Settings, config: Path, master_key_env: str | None) -> list[Problem]:
    """The master key: from the environment (never shown), else a 0600 well-formed key file."""
    from mcp_gateway.app.wiring import key_file_path
    from mcp_gateway.errors import VaultError
    from mcp_gateway.vault.keys import load_keyring

    path = key_file_path(settings)
    try:
        uses_secrets = "secret://" in config.read_text(encoding="utf-8")
    except OSError:
        uses_secrets = False
    try:
        if master_key_env:
            load_keyring(env_value=master_key_env, key_file=None)
        if path is not None and path.exists():
            load_keyring(env_value=None, key_file=path)
            return []
    except VaultError as exc:
        return [Problem(str(path) if path is not None else "MCP_GATEWAY_MASTER_KEY", None, str(exc))]
    if master_key_env:
        return []
    where = f"key file `{path}` does not exist" if path is not None else "no vault.key_file is configured"
    hint = f"create one with `mcp-gateway vault init -c {config}` or set MCP_GATEWAY_MASTER_KEY"
    severity: Literal["error", "warning"] = "error" if uses_secrets else "warning"
    needs = "the config names secret:// values, " if uses_secrets else ""
    line = _config_line(config, "vault", "key_file")
    return [Problem(str(config), line, f"no master key: {needs}{where} ({hint})", severity)]


def _secret_refs(config: Path) -> list[tuple[str, int]]:
    """Every ``secret://NAME`` in a value of the config file (not in comments), with its line."""
    from mcp_gateway.types import secret_refs

    try:
        root = yaml.compose(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    found: list[tuple[str, int]] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            found += [(name, node.start_mark.line + 1) for name in secret_refs(str(node.value))]
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(value for _, value in node.value)
    return sorted(found, key=lambda ref: ref[1])


def _secret_problems(settings: Settings, config: Path) -> list[Problem]:
    """Each ``secret://NAME`` the config names that the vault does not hold (read-only: the store's
    names only, no key, nothing created). No vault yet, or one that cannot be read: one warning."""
    from mcp_gateway.app.wiring import vault_secret_names
    from mcp_gateway.errors import VaultError

    refs = _secret_refs(config)
    if not refs:
        return []
    file = str(config)
    try:
        names = vault_secret_names(settings)
    except VaultError as exc:
        return [Problem(file, refs[0][1], f"cannot check the secret:// references: {exc}", "warning")]
    if names is None:
        listed = ", ".join(sorted({f"secret://{name}" for name, _ in refs}))
        message = f"no vault store yet: cannot check that it holds {listed}"
        return [Problem(file, refs[0][1], message, "warning")]
    held = set(names)
    return [
        Problem(file, line, f"secret://{name} is not in the vault (add it: `mcp-gateway vault put {name}`)")
        for name, line in refs
        if name not in held
    ]


def _data_dir_problems(settings: Settings, config: Path) -> list[Problem]:
    data_dir = settings.data_dir
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the gateway creates the missing part: its first existing ancestor decides
    line = _config_line(config, "data_dir")
    if probe.exists() and not probe.is_dir():
        return [Problem(str(config), line, f"data_dir `{data_dir}`: `{probe}` is not a directory")]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [Problem(str(config), line, f"data_dir `{data_dir}`: `{probe}` is not writable")]
    return []


def check_config(config: Path, *, master_key_env: str | None = None) -> list[Problem]:
    """Every problem in the config at ``config`` and the files it names (empty: it would serve)."""
    settings, problems = _settings_problems(config)
    if settings is None:
        return problems
    return [
        *_policy_problems(settings),
        *_key_problems(settings, config, master_key_env),
        *_secret_problems(settings, config),
        *_data_dir_problems(settings, config),
    ]


@config_app.command("check")
def config_check(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: ok, config, problems")] = False,
) -> None:
    """Check gateway.yaml, every policy file, the master key and the data dir without starting
    anything; prints every problem as file:line: message and exits 1 if any is an error."""
    from mcp_gateway.cli.common import master_key_env

    if config is None:
        env = os.environ.get("MCP_GATEWAY_CONFIG")
        config = Path(env) if env else Path("gateway.yaml")
    if not config.exists():
        raise fail(f"no gateway config at `{config}` (pass -c/--config or set MCP_GATEWAY_CONFIG)")
    problems = check_config(config, master_key_env=master_key_env())
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        doc = {"ok": not errors, "config": str(config), "problems": [asdict(p) for p in problems]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        for problem in problems:
            typer.echo(str(problem))
        warnings = len(problems) - len(errors)
        summary = f"{len(errors)} error{'s' if len(errors) != 1 else ''}, {warnings} warning" + (
            "s" if warnings != 1 else ""
        )
        typer.echo(f"{'ok' if not errors else 'failed'}: {config} ({summary})")
    if errors:
        raise typer.Exit(1)


@config_app.command("schema")
def config_schema(
    kind: Annotated[
        str, typer.Argument(help="gateway (gateway.yaml) or policy (policies/*.yaml)")
    ] = "gateway",
) -> None:
    """Print the JSON Schema of gateway.yaml or of a policy file (for editors and CI validators)."""
    from mcp_gateway.schemas import NAMES, schema_path

    for name in NAMES:
        if name == kind:
            typer.echo(schema_path(name).read_text(encoding="utf-8"), nl=False)
            return
    raise fail(f"unknown schema `{kind}`: choose gateway or policy")
