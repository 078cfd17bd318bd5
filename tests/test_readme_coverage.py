"""Every `mixatlas` command and option the README's ```bash blocks show runs in a test through the real CLI.

README side: each `mixatlas ...` line of a bash block (continuation lines joined, comments dropped) is
resolved against the CLI itself (typer's click tree) to its command (`search`, `atlas audit`, ...) and the
options it shows; an option the CLI does not have fails here too. For the options in `VALUE_OPTIONS` the
value counts as well (`--executor ray` and `--executor slurm` are two items). A bare command is the item "".

Test side: every call in tests/ whose string arguments, after a launcher (`-c "from mixatlas.cli import main;
main()"`, `-m mixatlas`), start with a CLI command is an invocation: `run_mixatlas("search", ...)`,
`CliRunner().invoke(app, [...])`, `subprocess.run([*CLI, "demo", ...])`, a test's own wrapper `cli("study",
"show", ...)`. Names passed in (`*CALLABLE`, `[*cli, "--out", ...]`) are resolved through their assignments
in the function, then the module; a `@pytest.mark.parametrize` parameter stands for each of its string
values; anything else the test computes (paths, numbers) is an unknown value. An item is covered when one
invocation of its command has it.

What cannot run here is in `NOT_RUN`, each with its reason; an entry must still be in the README and must not
be covered by a test (then it goes).
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer

from mixatlas.cli import app

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"

# Options whose value picks a code path (where trials run, the tracker, the method, objective, problem family,
# space, output format, embedder): each value the README shows is an item of its own. `--embedder
# clip:<model>` counts as `--embedder clip`.
VALUE_OPTIONS = frozenset({"--executor", "--track", "--method", "--objective", "--synthetic", "--space",
                           "--format", "--embedder"})

# (command, item) the suite cannot run, and why. Empty now: what needs a GPU or the hub is a value, not an
# item, and its item runs on the CPU from local folders (`--embedder clip:<folder>`, `--vision/--lm <folder>`,
# `--bf16` as CPU autocast, `--gpus 0`, `--gpus-per-trial` pinning from CUDA_VISIBLE_DEVICES). An entry a
# test covers, or the README no longer shows, fails `test_not_run_entries_are_current`.
NOT_RUN: dict[tuple[str, str], str] = {}

# A group that takes a command's arguments without naming it: `mixatlas recipe STUDY` is `recipe make STUDY`.
DEFAULT_SUBCOMMAND = {"recipe": "make"}
# Statements whose bodies hold a test's `args = [...]` assignments.
BLOCKS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.For, ast.With, ast.If, ast.Try)
# What starts `mixatlas` in a test's subprocess argv before the command itself.
LAUNCHER = re.compile(r"^(-c|-m|mixatlas|.*mixatlas\.cli import main.*)$")


@dataclass(frozen=True)
class Invocation:
    """One `mixatlas` run: where it is written, its command path ("" = the root) and its items."""

    where: str
    command: str
    items: frozenset[str]


class Choices(tuple):
    """A token that is one of several strings: a parameter of `@pytest.mark.parametrize`."""


@cache
def cli_commands() -> dict[str, Any]:
    """Command path ("", "search", "atlas show", ...) -> its click command, from the real CLI."""
    commands: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        commands[path] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return commands


def option_names(command: Any) -> dict[str, str]:
    """Every spelling of a command's options -> its canonical one (`-o` -> `--out`; `--no-x` stays)."""
    names: dict[str, str] = {}
    for param in command.params:
        longs = [o for o in param.opts if o.startswith("--")] or list(param.opts)
        for opt in param.opts:
            names[opt] = longs[0]
        for opt in getattr(param, "secondary_opts", []):
            names[opt] = opt
    return names


def resolve(tokens: list[Any]) -> tuple[str, list[Any]] | None:
    """(command path, the tokens after it), or None when the tokens do not start a `mixatlas` command."""
    commands = cli_commands()
    path = ""
    rest = list(tokens)
    while hasattr(commands[path], "commands") and rest:
        name = rest[0]
        child = f"{path} {name}".strip() if isinstance(name, str) else None
        if child in commands:
            path, rest = child, rest[1:]
        elif path in DEFAULT_SUBCOMMAND and not (isinstance(name, str) and name.startswith("-")):
            path = f"{path} {DEFAULT_SUBCOMMAND[path]}"
        else:
            break
    if path == "":  # the root runs only its own option
        return (path, rest) if rest and rest[0] == "--version" else None
    if hasattr(commands[path], "commands"):  # a group without its subcommand: not a run
        return None
    return path, rest


def _alternatives(token: Any) -> list[str]:
    """The strings a token may be: itself, each of its `Choices`, or none (a value the test computes)."""
    if isinstance(token, Choices):
        return list(token)
    return [token] if isinstance(token, str) else []


def items_of(command: str, rest: list[Any], where: str, strict: bool) -> frozenset[str]:
    """The items of one invocation: its canonical options, `--opt value` for `VALUE_OPTIONS`, and ""."""
    names = option_names(cli_commands()[command])
    items = {""}
    for i, token in enumerate(rest):
        for text in _alternatives(token):
            text = text.strip("[]")
            if not text.startswith("--"):
                continue
            flag = text.split("=", 1)[0]
            if flag not in names:
                assert not strict, f"{where}: `mixatlas {command}` has no option {flag}"
                continue
            flag = names[flag]
            items.add(flag)
            if flag not in VALUE_OPTIONS:
                continue
            after = rest[i + 1] if i + 1 < len(rest) else None
            values = [text.split("=", 1)[1]] if "=" in text else _alternatives(after)
            for value in values:
                for choice in value.strip("[]").split("|"):
                    if choice and not choice.startswith("-") and choice != "..." and not choice.isupper():
                        items.add(f"{flag} {choice.split(':', 1)[0]}")
    return frozenset(items)


# ----- the README side --------------------------------------------------------------------------------


def bash_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command line) of the ```bash blocks, continuation lines joined."""
    inside, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```bash"
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def readme_invocations(text: str) -> list[Invocation]:
    """Every `mixatlas ...` the bash blocks of a README's `text` show."""
    found = []
    for number, line in bash_lines(text):
        tokens = shlex.split(line, comments=True)
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in ("|", "||", "&&", ";"):
                segment.append(token)
                continue
            if segment and segment[0] == "mixatlas":
                where = f"README.md:{number}"
                resolved = resolve(segment[1:])
                assert resolved is not None, f"{where}: `{' '.join(segment)}` is no mixatlas command"
                command, rest = resolved
                found.append(Invocation(where, command, items_of(command, rest, where, strict=True)))
            segment = []
    return found


# ----- the tests side ---------------------------------------------------------------------------------


def _assignments(body: list[ast.stmt]) -> dict[str, ast.expr]:
    """`NAME = value` statements directly in a body (the last one of a name wins)."""
    found = {}
    for statement in body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = statement.value
    return found


def _parametrized(function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Choices]:
    """Parameter -> the string values `@pytest.mark.parametrize` gives it (non-strings left out)."""
    found: dict[str, Choices] = {}
    for decorator in function.decorator_list:
        if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"
                and len(decorator.args) >= 2):
            continue
        names_node, values_node = decorator.args[:2]
        if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
            names = [name.strip() for name in names_node.value.split(",")]
        elif isinstance(names_node, ast.List | ast.Tuple):
            names = [n.value for n in names_node.elts if isinstance(n, ast.Constant)]
        else:
            continue
        rows = values_node.elts if isinstance(values_node, ast.List | ast.Tuple) else []
        for i, name in enumerate(names):
            values = []
            for row in rows:
                if isinstance(row, ast.Call):  # pytest.param(value, ..., id=...)
                    row = ast.Tuple(row.args)
                cell = row
                if len(names) > 1:
                    cell = row.elts[i] if isinstance(row, ast.Tuple) and i < len(row.elts) else None
                if isinstance(cell, ast.Constant) and isinstance(cell.value, str):
                    values.append(cell.value)
            if values:
                found[name] = Choices(values)
    return found


def _flatten(node: ast.expr, scopes: list[dict[str, Any]], depth: int = 0) -> list[str | Choices | None]:
    """A call argument as argv tokens: strings as they are, lists/tuples/starred names spread, a
    parametrized name as its `Choices`, None for anything the test computes."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, Choices):
        return [node]
    if isinstance(node, ast.JoinedStr):  # f"clip:{model}" -> "clip:{}": its literal text is what counts
        return ["".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)]
    if isinstance(node, ast.Starred):
        return _flatten(node.value, scopes, depth)
    if isinstance(node, ast.List | ast.Tuple):
        return [token for element in node.elts for token in _flatten(element, scopes, depth)]
    if isinstance(node, ast.Name) and depth < 3:
        for scope in scopes:
            if node.id in scope:
                return _flatten(scope[node.id], scopes, depth + 1)
    return [None]


def _calls(tree: ast.Module) -> Iterator[tuple[ast.Call, list[dict[str, Any]]]]:
    """Every call in a module with the name scopes it sees (its function's, then the module's)."""
    module_scope = _assignments(tree.body)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    seen: set[int] = set()
    for function in functions:
        local: dict[str, Any] = dict(_parametrized(function))
        for node in ast.walk(function):
            if isinstance(node, BLOCKS):
                local.update(_assignments(node.body))
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and id(node) not in seen:
                seen.add(id(node))
                yield node, [local, module_scope]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in seen:
            yield node, [module_scope]


@cache
def invocations_in_tests() -> list[Invocation]:
    """Every `mixatlas` run written in the tests (this file's own examples excluded)."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for call, scopes in _calls(tree):
            arguments = [*call.args, *(k.value for k in call.keywords if k.arg == "args")]
            tokens = [token for argument in arguments for token in _flatten(argument, scopes)]
            while tokens and tokens[0] is None:  # CliRunner's `app`, `sys.executable`
                tokens = tokens[1:]
            while tokens and isinstance(tokens[0], str) and LAUNCHER.match(tokens[0]):
                tokens = tokens[1:]
            resolved = resolve(tokens) if tokens and isinstance(tokens[0], str) else None
            if resolved is not None and (resolved[1] or resolved[0] == ""):  # not a bare `mktemp("report")`
                where = f"{path.relative_to(TESTS.parent)}:{call.lineno}"
                command, rest = resolved
                found.append(Invocation(where, command, items_of(command, rest, where, strict=False)))
    return found


@cache
def covered() -> dict[str, set[str]]:
    """Command -> the items some test invocation of it has."""
    by_command: dict[str, set[str]] = {}
    for run in invocations_in_tests():
        by_command.setdefault(run.command, set()).update(run.items)
    return by_command


@cache
def readme_items(text: str | None = None) -> dict[tuple[str, str], str]:
    """(command, item) -> the first line of README.md (or of a README `text`) that shows it."""
    items: dict[tuple[str, str], str] = {}
    for run in readme_invocations(README.read_text() if text is None else text):
        for item in run.items:
            items.setdefault((run.command, item), run.where)
    return items


# ----- the checks -------------------------------------------------------------------------------------


def missing(text: str | None = None) -> list[str]:
    """"README.md:LINE: mixatlas COMMAND ITEM" for each README item no test runs and NOT_RUN does not name."""
    runs = covered()
    return [f"{where}: mixatlas {command} {item}".rstrip()
            for (command, item), where in sorted(readme_items(text).items(), key=lambda kv: kv[1])
            if item not in runs.get(command, set()) and (command, item) not in NOT_RUN]


def test_every_readme_command_and_option_runs_in_a_test() -> None:
    gaps = missing()
    assert not gaps, "README shows, no test runs through the CLI:\n" + "\n".join(gaps)
    # the check itself: a README line with an option no test runs is caught, and so is a made-up option
    line = "mixatlas proxy train --atlas atlas --mixture uniform --out run0 --threads 2"
    added = f"{README.read_text()}\n```bash\n{line}\n```\n"
    assert missing(added) == [f"README.md:{len(added.splitlines()) - 1}: mixatlas proxy train --threads"]
    with pytest.raises(AssertionError, match="`mixatlas search` has no option --budjet"):
        readme_items("```bash\nmixatlas search --budjet 4\n```\n")


def stale(entries: dict[tuple[str, str], str]) -> dict[str, list[tuple[str, str]]]:
    """The entries of a NOT_RUN table the README no longer shows, and those a test now runs."""
    shown, runs = readme_items(), covered()
    return {"not in the README": [key for key in entries if key not in shown],
            "run by a test": [key for key in entries if key[1] in runs.get(key[0], set())]}


def test_not_run_entries_are_current() -> None:
    found = stale(NOT_RUN)
    assert found == {"not in the README": [], "run by a test": []}, f"stale NOT_RUN entries: {found}"
    # the check itself: an option the README does not show, and one the tests run, are both caught
    made_up = {("search", "--no-such-option"): "x", ("search", "--budget"): "x"}
    assert stale(made_up) == {"not in the README": [("search", "--no-such-option")],
                              "run by a test": [("search", "--budget")]}


def test_the_scanner_sees_both_sides() -> None:
    """The parsers find what is known to be there (so an empty scan cannot pass the checks above)."""
    shown = readme_items()
    assert ("search", "--executor slurm") in shown and ("atlas audit", "--export") in shown
    assert ("recipe make", "--baseline") in shown and ("", "--version") in shown
    runs = covered()
    assert {"--executor ray", "--executor slurm", "--ray-address"} <= runs["search"]
    assert "--quick" in runs["demo"] and "--version" in runs[""]
    invented = Invocation("x", "search", items_of("search", ["--budget", "2", "--track", "comet"], "x", True))
    assert invented.items == {"", "--budget", "--track", "--track comet"}
