"""Parse and validate policy YAML into a compiled ``Policy``; every problem is reported as ``file:line``.

Stages: YAML (a SafeLoader that remembers the line of every mapping key and list item, and refuses
duplicate keys) → schema (pydantic, ``model.PolicyDocument``) → merge across files (ids unique) →
compile. Problems from every file are collected and raised together as one ``PolicyLoadError``, so an
admin fixes a policy in one pass rather than one error per reload.

The YAML dialect is narrowed towards YAML 1.2 on purpose: only ``true``/``false`` are booleans (so a
country code ``NO`` or a value ``on`` stays a string) and dates stay strings, as they do in the JSON
arguments the constraints are compared against.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mcp_gateway.errors import PolicyLoadError
from mcp_gateway.policy.catalog import builtin_name_problems
from mcp_gateway.policy.compile import compile_grant, compile_rates
from mcp_gateway.policy.model import CompiledGrant, NamedMetric, Policy, PolicyDocument, TableRule
from mcp_gateway.policy.version import policy_version

POLICY_SUFFIXES = (".yaml", ".yml")


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its own line and each key's line (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}


class _Seq(list[Any]):
    """A YAML sequence that remembers its own line and each item's line (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


try:  # libyaml's parser when PyYAML was built with it: several times faster on large policies
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _Loader(_BaseLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[tuple[int, str]] = []


_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map(node.start_mark.line + 1)
    yield data  # yield first, fill after: lets aliases refer back to this mapping
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # `<<` merged pairs are prepended; explicit keys may override them
    merged = len(node.value) - own
    explicit: dict[Any, int] = {}
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if i >= merged:
            if key in explicit:
                # PyYAML keeps the last value silently; a policy must not change meaning that way.
                loader.problems.append((line, f"duplicate key `{key}` (first at line {explicit[key]})"))
                continue
            explicit[key] = line
        data[key] = loader.construct_object(value_node)
        data.key_lines[key] = line


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[_Seq]:
    data = _Seq(node.start_mark.line + 1)
    yield data
    for item in node.value:
        data.append(loader.construct_object(item))
        data.item_lines.append(item.start_mark.line + 1)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)

_TYPE_MESSAGES = {
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected a string",
    "string_too_short": "must not be empty",
    "bool_type": "expected `true` or `false`",
}


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        # An int is a list index, unless pydantic marks it as a mapping key (a YAML key like `3:`).
        as_key = not isinstance(part, int) or loc[i + 1 : i + 2] == ("[key]",)
        out += (f".{part}" if out else str(part)) if as_key else f"[{part}]"
    return out


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _expected_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the schema allows at ``loc`` (to suggest the right spelling of an unknown key)."""
    tp: Any = PolicyDocument
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(info.alias or name): info for name, info in tp.model_fields.items()}
            if part not in fields:
                return []
            tp = fields[str(part)].annotation
        else:  # dict value or list item
            args = [a for a in get_args(tp) if a is not Ellipsis]
            if not args:
                return []
            tp = args[-1]
    tp = _unwrap_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _message(error: ErrorDetails) -> str:
    loc = error["loc"]
    kind = error["type"]
    parent = f" in `{_dotted(loc[:-1])}`" if len(loc) > 1 else ""
    if kind == "extra_forbidden":
        expected = ", ".join(f"`{k}`" for k in _expected_keys(loc[:-1]))
        return f"unknown key `{loc[-1]}`{parent}" + (f" (expected one of {expected})" if expected else "")
    if kind == "missing":
        return f"missing key `{loc[-1]}`{parent}"
    if kind == "literal_error":
        return f"unsupported {_dotted(loc)} `{error['input']}` (expected 1)"
    if kind == "value_error":
        text = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        text = _TYPE_MESSAGES.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
    path = _dotted(loc)
    return f"`{path}`: {text}" if path else text


def _line_of(data: Any, loc: Sequence[int | str]) -> int:
    """The line of the deepest node on ``loc`` that exists in the raw YAML."""
    node, line = data, getattr(data, "line", 1)
    for part in loc:
        if isinstance(node, _Map) and part in node:
            line, node = node.key_lines[part], node[part]
        elif isinstance(node, _Seq) and isinstance(part, int) and 0 <= part < len(node):
            line, node = node.item_lines[part], node[part]
        else:
            break
    return line


def _parse_file(text: str, problems: list[tuple[int, str]]) -> tuple[PolicyDocument, _Map] | None:
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ": ".join(str(p) for p in (exc.context, exc.problem) if p)
        problems.append((mark.line + 1 if mark else 1, f"invalid yaml: {detail}"))
        return None
    except yaml.YAMLError as exc:  # reader errors (e.g. control characters) carry no mark
        problems.append((1, f"invalid yaml: {exc}"))
        return None
    finally:
        loader.dispose()
    problems.extend(loader.problems)
    if data is None:
        problems.append((1, "empty policy file (expected `version: 1` and `agents`)"))
        return None
    try:
        document = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        problems.extend((_line_of(data, e["loc"]), _message(e)) for e in exc.errors())
        return None
    if loader.problems or not isinstance(data, _Map):
        return None
    return document, data


def _compile(parsed: Sequence[tuple[str, PolicyDocument, _Map]], problems: list[str]) -> Policy:
    """Merge documents in order: an agent named in several files gets all their grants (first description
    wins); ids must be unique across all files."""
    agents: dict[str, list[CompiledGrant]] = {}
    descriptions: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    tables: dict[str, TableRule] = {}
    metrics: dict[str, NamedMetric] = {}
    runbooks: dict[str, str] = {}
    agent_rates: dict[str, tuple[tuple[str, int, int], ...]] = {}
    for filename, document, raw in parsed:
        _merge_named(filename, raw, "tables", document.tables, tables, problems)
        _merge_named(filename, raw, "metrics", document.metrics, metrics, problems)
        _merge_named(filename, raw, "runbooks", document.runbooks, runbooks, problems)
        raw_agents = raw.get("agents")
        for agent, agent_policy in document.agents.items():
            raw_agent = raw_agents[agent] if isinstance(raw_agents, _Map) else None
            raw_grants = raw_agent.get("grants") if isinstance(raw_agent, _Map) else None
            grants = agents.setdefault(agent, [])
            if agent_policy.description and agent not in descriptions:
                descriptions[agent] = agent_policy.description
            if agent_policy.rate:
                agent_rates[agent] = agent_rates.get(agent, ()) + compile_rates(agent_policy.rate)
            for i, grant in enumerate(agent_policy.grants):
                raw_grant = raw_grants[i] if isinstance(raw_grants, _Seq) else None
                raw_deny = raw_grant.get("deny") if isinstance(raw_grant, _Map) else None
                compiled = compile_grant(
                    agent,
                    len(grants),
                    grant,
                    source=f"{filename}:{getattr(raw_grant, 'line', 1)}",
                    deny_sources=[f"{filename}:{line}" for line in getattr(raw_deny, "item_lines", [])],
                )
                ids = [(compiled.id, compiled.source)] + [(r.id, r.source) for r in compiled.deny_rules]
                for rule_id, source in ids:
                    if rule_id in first_seen:
                        first = first_seen[rule_id]
                        problems.append(f"{source}: duplicate rule id `{rule_id}` (first defined at {first})")
                    else:
                        first_seen[rule_id] = source
                grants.append(compiled)
    for table, rule in tables.items():
        for name in rule.metrics + tuple(c.name for c in rule.switch_in_checks if c.name):
            if name not in metrics:
                problems.append(
                    f"{_table_source(parsed, table)}: table `{table}` names unknown metric `{name}`"
                )
    return Policy(
        agents={name: tuple(grants) for name, grants in agents.items()},
        descriptions=descriptions,
        sources=tuple(name for name, _, _ in parsed),
        tables=tables,
        metrics=metrics,
        runbooks=runbooks,
        agent_rates=agent_rates,
    )


def _merge_named(
    filename: str,
    raw: _Map,
    section: str,
    items: Mapping[str, Any],
    into: dict[str, Any],
    problems: list[str],
) -> None:
    """Merge one top-level named section (``tables``, ``metrics``, ``runbooks``); a name defined in two
    files is an error, since which definition wins would depend on file order."""
    raw_section = raw.get(section)
    for name, item in items.items():
        line = raw_section.key_lines.get(name, 1) if isinstance(raw_section, _Map) else 1
        if name in into:
            problems.append(f"{filename}:{line}: `{section}.{name}` is defined in more than one file")
        else:
            into[name] = item


def _table_source(parsed: Sequence[tuple[str, PolicyDocument, _Map]], table: str) -> str:
    for filename, document, raw in parsed:
        if table in document.tables:
            section = raw.get("tables")
            line = section.key_lines.get(table, 1) if isinstance(section, _Map) else 1
            return f"{filename}:{line}"
    return "<policy>"


def _load_sources(
    sources: Iterable[tuple[str, str]], builtin_tools: Mapping[str, Collection[str]] | None = None
) -> Policy:
    problems: list[str] = []
    parsed: list[tuple[str, PolicyDocument, _Map]] = []
    for filename, text in sources:
        file_problems: list[tuple[int, str]] = []
        result = _parse_file(text, file_problems)
        problems.extend(
            f"{filename}:{line}: {msg}" for line, msg in sorted(file_problems, key=lambda p: p[0])
        )
        if result is not None:
            parsed.append((filename, *result))
    policy = _compile(parsed, problems)
    if builtin_tools is not None:
        problems.extend(builtin_name_problems(policy, builtin_tools))
    if problems:
        raise PolicyLoadError(problems)
    return policy


def parse_policy_text(
    text: str, filename: str = "<string>", *, builtin_tools: Mapping[str, Collection[str]] | None = None
) -> Policy:
    """Parse one policy document from text.

    Args:
        text: the YAML source.
        filename: the name used in error locations.
        builtin_tools: toolset name → every tool name it has; given, a grant under a built-in prefix
            that matches no built-in tool is a problem (``catalog.builtin_name_problems``).

    Raises:
        PolicyLoadError: carrying every problem found, each as ``filename:line: message``.
    """
    return _load_sources([(filename, text)], builtin_tools)


def policy_files(path: Path) -> list[Path]:
    """The files ``load_policy`` reads for ``path``: the file itself, or a directory's ``*.yaml``/``*.yml``
    (not hidden ones, which are editor and tool droppings) sorted by name."""
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix in POLICY_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
    return [path]


def load_policy(path: Path, *, builtin_tools: Mapping[str, Collection[str]] | None = None) -> Policy:
    """Load, validate, merge and compile a policy file or a directory of policy files.

    An empty directory is a valid policy that grants nothing.

    Args:
        path: a policy file, or a directory whose ``*.yaml``/``*.yml`` files are merged in name order.
        builtin_tools: toolset name → every tool name it has; given, a grant under a built-in prefix
            that matches no built-in tool is a problem (a permission that would silently grant nothing).

    Raises:
        PolicyLoadError: carrying every problem in every file, each as ``file:line: message``.
    """
    return load_versioned_policy(path, builtin_tools=builtin_tools)[0]


def load_versioned_policy(
    path: Path, *, builtin_tools: Mapping[str, Collection[str]] | None = None, texts: list[Any] | None = None
) -> tuple[Policy, str]:
    """``load_policy``, and the ``policy_version`` of the very texts it compiled (read once: an edit landing
    between parse and hash cannot mislabel a policy); ``texts``, given, receives each ``(path, text)``.

    Raises:
        PolicyLoadError: as ``load_policy``.
    """
    if not path.exists():
        raise PolicyLoadError([f"{path}: no such file or directory"])
    sources: list[tuple[str, str]] = [] if texts is None else texts
    problems: list[str] = []
    for file in policy_files(path):
        try:
            sources.append((str(file), file.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            problems.append(f"{file}:1: file is not valid utf-8")
        except OSError as exc:
            problems.append(f"{file}:1: cannot read file: {exc.strerror or exc}")
    try:
        policy = _load_sources(sources, builtin_tools)
    except PolicyLoadError as exc:
        raise PolicyLoadError([*problems, *exc.problems]) from None
    if problems:
        raise PolicyLoadError(problems)
    version = policy_version(sources)
    return dataclasses.replace(policy, version=version), version
