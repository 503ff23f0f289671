"""The documentation site keeps up with the code: the reference under docs/reference/ names every option,
label key, metric, exit code and log event the code has, and every page is in mkdocs.yml's nav.

Each vocabulary is read from the code itself (click's parameters, the key constants, the metrics
registry, ``ExitCode``, the log calls), so a new option or key without a row fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from registrar import checks, service_meta
from registrar.cli import cli
from registrar.lifecycle import ExitCode

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical", "exception"})
NO_ENVVAR = frozenset({"--json"})
"""Options that no REGISTRAR_<OPTION> variable sets (docs/reference/options.md says so)."""


def table_rows(page: Path) -> list[list[str]]:
    """The cells of every table row of a Markdown page (separator rows left out)."""
    rows = []
    for line in page.read_text().splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\-: ]+", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def first_cells(page: Path, columns: int = 1) -> str:
    """The first ``columns`` cells of every table row of a page, as one text."""
    return "\n".join(" ".join(row[:columns]) for row in table_rows(page))


def options() -> dict[str, tuple[click.Option, set[str]]]:
    """Every option of every command by its first long name: the option and the commands that take it."""
    found: dict[str, tuple[click.Option, set[str]]] = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                found.setdefault(param.opts[0], (param, set()))[1].add(name)
    return found


def flags(text: str) -> set[str]:
    """The ``--long`` and ``-single`` option names written in a text."""
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))


def test_every_option_and_its_registrator_alias_has_a_row() -> None:
    """Each --long name, its --no- form and registrator's single-dash alias is in an options reference row."""
    documented = flags(first_cells(REFERENCE / "options.md", columns=2))
    names = {name for option, _ in options().values() for name in [*option.opts, *option.secondary_opts]}
    assert names, "no options found on registrar.cli.cli"
    assert sorted(names - documented) == []


def test_options_of_some_commands_name_them() -> None:
    """An option that only some commands take says which, as ``(plan, sync)`` in its row."""
    everyone = set(cli.commands)
    rows = {next(iter(flags(row[0])), ""): row[0] for row in table_rows(REFERENCE / "options.md") if row[0]}
    for name, (_, commands) in options().items():
        if commands != everyone:
            named = re.search(r"\(([a-z, ]+)\)", rows.get(name, ""))
            assert named, f"{name}: its row does not name the commands that take it ({sorted(commands)})"
            assert set(named.group(1).replace(" ", "").split(",")) == commands, name


def test_every_option_but_json_reads_its_registrar_variable() -> None:
    """The options reference says every option is also REGISTRAR_<OPTION>: each one is, but --json."""
    for name, (option, _) in options().items():
        expected = None if name in NO_ENVVAR else "REGISTRAR_" + name.removeprefix("--").upper().replace("-", "_")
        assert option.envvar == expected, name


def test_every_command_has_a_section() -> None:
    """Each command of ``registrar --help`` has its own ``## registrar NAME`` section in the commands reference."""
    text = (REFERENCE / "commands.md").read_text()
    assert sorted(name for name in cli.commands if f"\n## registrar {name}\n" not in text) == []


def label_keys() -> set[str]:
    """Every SERVICE_* key the code reads, from its constants: the service keys, the Docker health switch,
    and each check field (``SERVICE_CHECK_HEADER_`` for the header prefix)."""
    keys = {"SERVICE_" + key.upper() for key in service_meta.RESERVED_KEYS}
    keys.add("SERVICE_" + checks.DOCKER_HEALTH_KEY.upper())
    keys |= {"SERVICE_CHECK_" + field.upper() for field in checks.FIELDS}
    keys.add("SERVICE_CHECK_" + checks.HEADER.upper())
    return keys


def documented_label_keys() -> set[str]:
    """The SERVICE_* keys named in the first column of the labels reference's tables."""
    return set(re.findall(r"SERVICE_[A-Z0-9_]*", first_cells(REFERENCE / "labels.md"))) - {"SERVICE_"}


def test_every_label_key_has_a_row() -> None:
    """Each SERVICE_* key registrar reads (service_meta.RESERVED_KEYS, checks.FIELDS ...) has a labels reference row."""
    assert sorted(label_keys() - documented_label_keys()) == []


def test_no_label_row_names_a_key_the_code_does_not_read() -> None:
    """The labels reference names no SERVICE_* key that the code has no constant for (a stale row)."""
    assert sorted(documented_label_keys() - label_keys()) == []


def test_every_metric_has_a_row() -> None:
    """Each metric registrar's registry exports (counters with _total) is in the metrics reference, and no other."""
    from registrar.metrics import Metrics

    exported = {family.name + ("_total" if family.type == "counter" else "") for family in Metrics().registry.collect()}
    documented = set(re.findall(r"registrar_\w+", first_cells(REFERENCE / "metrics.md")))
    assert exported and (sorted(exported - documented), sorted(documented - exported)) == ([], [])


def test_every_exit_code_has_a_row() -> None:
    """Each ExitCode is a row of the exit codes reference, its number and its name together."""
    rows = {(row[0], row[1]) for row in table_rows(REFERENCE / "exit-codes.md") if len(row) > 1}
    assert sorted(code.name for code in ExitCode if (str(int(code)), f"`{code.name}`") not in rows) == []


def log_events() -> set[str]:
    """Every event name registrar logs: ``log.<level>("name", ...)`` calls, the log lines the reconciler returns
    as effects (``Log(level, "name", ...)``, ``self._say(level, "name", ...)``), and ``<what>_unreachable`` for
    each ``retry_at_start("<what>", ...)``."""
    events: set[str] = set()
    for path in sorted((ROOT / "registrar").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            said = ast.unparse(node.func) in ("Log", "self._say") and len(node.args) > 1
            if said and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                events.add(node.args[1].value)
                continue
            if not isinstance(node.args[0], ast.Constant):
                continue
            name, func = node.args[0].value, node.func
            if not isinstance(name, str):
                continue
            if isinstance(func, ast.Attribute) and func.attr in LOG_LEVELS and ast.unparse(func.value) == "log":
                events.add(name)
            elif isinstance(func, ast.Name) and func.id == "retry_at_start":
                events.add(f"{name}_unreachable")
    return events


def test_every_log_event_has_a_row() -> None:
    """Each event registrar logs is a row of the log events reference, and every row is an event it logs."""
    emitted = log_events()
    documented = {row[0].strip("`") for row in table_rows(REFERENCE / "log-events.md")} - {"event"}
    assert emitted and (sorted(emitted - documented), sorted(documented - emitted)) == ([], [])


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists (paths under docs/), in order."""
    text = (ROOT / "mkdocs.yml").read_text()
    return re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", text.partition("\nnav:\n")[2], re.MULTILINE)


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_every_page_is_in_the_nav(page: str) -> None:
    """Each Markdown page under docs/ is listed in mkdocs.yml's nav."""
    assert page in nav_pages()


def test_every_nav_entry_is_a_page() -> None:
    """Each page mkdocs.yml's nav lists exists under docs/, once."""
    pages = nav_pages()
    assert pages and len(pages) == len(set(pages))
    assert [page for page in pages if not (DOCS / page).is_file()] == []
