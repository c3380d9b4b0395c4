"""The documentation stays true to the repository: its size, links, anchors, the paths, run ids,
CLI commands and ``gateway.yaml`` keys it names.

Rules, precisely:

- **Links**: every Markdown link ``[text](target)`` outside code in ``README.md``, ``docs/*.md``,
  ``SECURITY.md`` and ``deploy/README.md`` whose target has no URL scheme must name an existing file
  inside the repository; a ``#anchor`` must be the GitHub slug of a heading of the target (or of the
  page itself when the target is only ``#anchor``).
- **Paths**: in ``README.md`` and ``docs/*.md``, each whitespace-separated token of an inline code
  span (fenced blocks are left to the commands check) is a repository path when it is made only of
  ``[A-Za-z0-9_./-]`` (so no URL, placeholder, glob or option), does not start with ``/`` (the
  gateway's HTTP routes) or ``-``, and either ends in one of ``PATH_SUFFIXES``, ends in ``/`` (a
  folder), or starts with a top-level entry of the repository (``src/``, ``bench/``, ``.ci/``...).
  MCP method names such as ``tools/call`` match none of these. What a user's own set-up creates
  (``GENERATED``, ``RUNTIME_FILES``) is skipped. A leading ``./`` is dropped. A path resolves against
  the repository root or ``src/mcp_gateway/`` (the docs name modules package-relative); a bare file
  name (or ``name/``) resolves if a file (or folder) of that name is in the repository; a
  ``bench/results/`` name resolves with any results suffix (run ids).
- **Run ids**: every benchmark run id (``proxy-20261203T175308Z``...) named anywhere in those pages
  has a results file in ``bench/results/``.
- **Commands**: every ``mcp-gateway GROUP COMMAND`` (or top-level command) named anywhere in those
  pages exists in the typer app, and every ``--option`` written after it on the same line (up to the
  end of the code span, a comment or a shell separator) is an option of that command.
- **Config keys**: every key of the ``gateway.yaml`` model (``mcp_gateway.config.Settings``, at every
  depth, through every variant) is named in code in ``docs/configuration.md``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from mcp_gateway.cli import app
from mcp_gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "mcp_gateway"
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
NAMING_PAGES = [README, *DOCS]
LINKING_PAGES = [*NAMING_PAGES, ROOT / "SECURITY.md"] + [
    p for p in [ROOT / "deploy" / "README.md"] if p.exists()
]
README_LIMIT = 15_000

PATH_SUFFIXES = (".py", ".yaml", ".yml", ".md", ".toml", ".json", ".txt", ".cfg", ".sh", ".mjs")
GENERATED = (".mcp-gateway-quickstart/", "my-gateway/")
RUNTIME_FILES = {"gateway.yaml"}  # the config file every deployment writes, not a file of this repository
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
RUN_ID = re.compile(
    r"\b(?:proxy|micro|process|profile|redaction|audit-writers|audit-search)-\d{8}T\d{6}Z(?:-start-of-round)?\b"
)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
PATHLIKE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
WORD = r"[a-z][a-z0-9-]*(?:\\?\|[a-z][a-z0-9-]*)*"
COMMAND = re.compile(rf"(?<![\w.-])mcp-gateway[ \t]+({WORD})(?:[ \t]+({WORD}))?")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_END = re.compile(r"`|#|\)|;|&&| \| |\$\(")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Page:
    """A Markdown page split the way the checks need it (line numbers are 1-based)."""

    code_lines: list[tuple[int, str]]
    """The lines inside fenced code blocks."""
    spans: list[tuple[int, str]]
    """Inline code spans outside fenced blocks (a span may wrap lines: its newlines become spaces)."""
    prose_lines: list[tuple[int, str]]
    """The lines outside fenced blocks, with every inline code span taken out."""
    headings: list[str]
    """The text of every heading, in order."""


@cache
def parse(path: Path) -> Page:
    code_lines: list[tuple[int, str]] = []
    prose: list[str] = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
        elif fenced:
            code_lines.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    spans = []
    for match in CODE_SPAN.finditer(text):
        if "\n\n" not in match.group(2):  # a span never crosses a paragraph break
            spans.append((text.count("\n", 0, match.start()) + 1, " ".join(match.group(2).split())))
    # Each span is replaced by its own newlines, so the prose keeps its line numbers.
    bare = CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    headings = [m.group(2) for line in prose if (m := HEADING.match(line))]
    return Page(code_lines, spans, list(enumerate(bare.split("\n"), 1)), headings)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in parse(page).headings:
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def links(page: Path) -> Iterator[tuple[int, str]]:
    for number, line in parse(page).prose_lines:
        for match in LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            yield number, target


def link_problem(page: Path, target: str) -> str | None:
    """Why ``target`` (a relative link on ``page``) does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    dest = page if not path_part else (page.parent / path_part).resolve()
    if not dest.is_relative_to(ROOT):
        return "points outside the repository"
    if not dest.is_file():
        return "no such file"
    if anchor:
        if dest.suffix != ".md":
            return "an anchor into a file that is not Markdown"
        if anchor not in anchors(dest):
            return f"no heading with anchor `#{anchor}` in {_rel(dest)}"
    return None


def _repository_entries() -> Iterator[Path]:
    for path in ROOT.rglob("*"):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


@cache
def repository_file_names() -> frozenset[str]:
    return frozenset(path.name for path in _repository_entries() if path.is_file())


@cache
def repository_dir_names() -> frozenset[str]:
    return frozenset(path.name for path in _repository_entries() if path.is_dir())


def top_level_entries() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name not in SKIP_DIRS}


def is_repository_path(span: str) -> bool:
    """Whether a code span names a repository path (see the module docstring)."""
    span = span.removeprefix("./")
    if not PATHLIKE.match(span) or span.startswith(GENERATED) or span in RUNTIME_FILES:
        return False
    if span.endswith(PATH_SUFFIXES) or span.endswith("/"):
        return True
    return "/" in span and span.split("/", 1)[0] in top_level_entries()


def path_exists(span: str) -> bool:
    span = span.removeprefix("./")
    if "/" not in span.rstrip("/"):  # a bare name: of a file, or of a folder when it ends in `/`
        if span.endswith("/"):
            return span.rstrip("/") in repository_dir_names()
        return span in repository_file_names()
    for base in (ROOT, PACKAGE):
        candidate = base / span
        if candidate.exists():
            return True
        if span.startswith("bench/results/") and any(
            candidate.with_name(candidate.name + suffix).exists() for suffix in (".json", ".md", ".txt")
        ):
            return True
    return False


def named_paths(page: Path) -> Iterator[tuple[int, str]]:
    for number, span in parse(page).spans:
        for token in span.split():  # `python bench/proxy.py --eras ...` names `bench/proxy.py`
            if is_repository_path(token):
                yield number, token


def run_id_exists(run_id: str) -> bool:
    results = ROOT / "bench" / "results"
    return any((results / f"{run_id}{suffix}").exists() for suffix in (".json", ".md", ".txt"))


@cache
def cli_tree() -> dict[str, Any]:
    """``{command: its --options}`` at the top level, ``{group: {command: its --options}}`` for groups."""
    root = typer.main.get_command(app)

    def options(command: Any) -> frozenset[str]:
        opts = {"--help"}
        for param in command.params:
            opts.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
        return frozenset(opts)

    def walk(command: Any) -> Any:
        if not hasattr(command, "list_commands"):
            return options(command)
        ctx = command.context_class(command)
        return {name: walk(command.get_command(ctx, name)) for name in command.list_commands(ctx)}

    tree = walk(root)
    assert isinstance(tree, dict)
    return tree


def command_problems(line: str) -> Iterator[str]:
    """Every way the ``mcp-gateway ...`` commands named on ``line`` fail to exist."""
    tree = cli_tree()
    for match in COMMAND.finditer(line):
        first, second = match.group(1), match.group(2)
        end = COMMAND_END.search(line, match.end())
        rest = line[match.end() : end.start() if end else len(line)]
        for name in re.split(r"\\?\|", first):
            node = tree.get(name)
            if node is None:
                yield f"`mcp-gateway {name}` is not a command"
                continue
            if isinstance(node, frozenset):  # a top-level command; `second` is an argument
                leaves = [(f"mcp-gateway {name}", node)]
                tail = (second or "") + rest
            elif second is None:
                yield f"`mcp-gateway {name}` names a group without one of its commands ({', '.join(node)})"
                continue
            else:
                leaves = []
                for sub in re.split(r"\\?\|", second):
                    if sub not in node:
                        yield f"`mcp-gateway {name} {sub}` is not a command ({', '.join(node)})"
                    else:
                        leaves.append((f"mcp-gateway {name} {sub}", node[sub]))
                tail = rest
            for option in OPTION.findall(tail):
                for label, opts in leaves:
                    if option not in opts:
                        yield f"`{label}` has no option `{option}`"


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = field.alias or name
        yield prefix + key
        for sub in _models(field.annotation):
            yield from config_keys(sub, f"{prefix}{key}.")


def words_in_code(page: Path) -> set[str]:
    parsed = parse(page)
    words: set[str] = set()
    for _, text in [*parsed.code_lines, *parsed.spans]:
        words.update(re.findall(r"[A-Za-z0-9_]+", text))
    return words


def test_the_readme_stays_under_fifteen_thousand_bytes() -> None:
    size = len(README.read_text(encoding="utf-8").encode())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_gives_the_quickstart_and_the_test_command_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/setup && .venv/bin/mcp-gateway quickstart" in readme
    assert "scripts/setup && scripts/check" in readme
    assert re.search(r"^scripts/setup && scripts/check$", ci, re.MULTILINE), ".ci/run no longer runs it"


@pytest.mark.parametrize("page", LINKING_PAGES, ids=_rel)
def test_every_relative_link_resolves_to_a_file_and_heading_in_the_repository(page: Path) -> None:
    broken = [
        f"{_rel(page)}:{number}: ({target}) {problem}"
        for number, target in links(page)
        if (problem := link_problem(page, target)) is not None
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", NAMING_PAGES, ids=_rel)
def test_every_repository_path_named_in_code_exists(page: Path) -> None:
    missing = [
        f"{_rel(page)}:{number}: `{span}`" for number, span in named_paths(page) if not path_exists(span)
    ]
    assert not missing, "no such path in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", NAMING_PAGES, ids=_rel)
def test_every_benchmark_run_id_named_has_a_results_file(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = sorted({run for run in RUN_ID.findall(text) if not run_id_exists(run)})
    assert not missing, f"{_rel(page)} names runs with no file in bench/results/: {missing}"


@pytest.mark.parametrize("page", NAMING_PAGES, ids=_rel)
def test_every_mcp_gateway_command_and_option_named_exists(page: Path) -> None:
    parsed = parse(page)
    # Each code line, each code span (whole, even when it wraps) and each line of prose around them.
    texts = [*parsed.code_lines, *parsed.spans, *parsed.prose_lines]
    problems = [
        f"{_rel(page)}:{number}: {problem}" for number, text in texts for problem in command_problems(text)
    ]
    assert not problems, "\n".join(problems)


def test_every_gateway_yaml_key_is_named_in_the_configuration_reference() -> None:
    documented = words_in_code(ROOT / "docs" / "configuration.md")
    missing = sorted({key for key in config_keys(Settings) if key.rsplit(".", 1)[-1] not in documented})
    assert not missing, f"docs/configuration.md does not name: {missing}"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Trust, round two (issue 13)", "trust-round-two-issue-13"),
        ("`ops`: pipeline reruns", "ops-pipeline-reruns"),
        ("Run your own gateway", "run-your-own-gateway"),
        ('After "Trust, round two" (issue 13)', "after-trust-round-two-issue-13"),
        ("[SECURITY.md](SECURITY.md) in short", "securitymd-in-short"),
    ],
)
def test_headings_get_githubs_anchors(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_the_checks_catch_what_they_are_for() -> None:
    # A broken link, a missing anchor, a missing path, a missing run and an unknown command are each caught.
    page = ROOT / "docs" / "README.md"
    assert link_problem(page, "missing.md") == "no such file"
    assert link_problem(page, "../README.md#no-such-heading") is not None
    assert link_problem(page, "../../outside.md") == "points outside the repository"
    assert link_problem(page, "architecture.md#invariants") is None
    assert is_repository_path("DESIGN.md") and not path_exists("DESIGN.md")
    assert is_repository_path("http/modern.py") and path_exists("http/modern.py")
    assert not is_repository_path("tools/call") and not is_repository_path("/readyz")
    assert not path_exists("bench/results/proxy-20261126T040137Z")
    assert not run_id_exists("proxy-20261126T040137Z")
    assert list(command_problems("`mcp-gateway audit verify --expect-head X`")) == []
    assert list(command_problems("`mcp-gateway audit verfy`"))
    assert list(command_problems("`mcp-gateway audit verify --no-such-option`"))
    assert list(command_problems("run `mcp-gateway frobnicate`"))
    keys = set(config_keys(Settings))  # nested keys, through unions and dict values
    assert {"server.watch_policy", "audit.commit_on_loop", "warehouses.statement_timeout_ms"} <= keys
    assert "upstreams.lean_calls" in keys and "no_such_key" not in words_in_code(
        ROOT / "docs" / "configuration.md"
    )
