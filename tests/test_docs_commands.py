"""Every `uld ...` command written in README.md and docs/*.md parses with the real CLI.

Commands are taken from code blocks (fenced or indented; `\\` continues a line) and from inline
code spans that pass an option (`uld unlearn --method npo`); a bare `uld bench` in prose names a
command rather than running one. Each is parsed by click with the real `uld` application, which
checks the sub-command, every option name, the number of arguments and each value's type,
without running anything. `--set key=value` overrides of `uld unlearn` are checked against the
run config too. Placeholders in capitals (MODEL, DIR) are ordinary strings to the parser;
`[--json]` marks an optional flag and is parsed as the flag.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

import uld.cli  # noqa: F401  (registers every sub-command on the app)
from uld.cli.app import app

CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")  # typer's copy of click
ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each `uld` command in a markdown text."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        block = fenced or line.startswith("    ")
        body = re.sub(r"^\s*(\$\s+)?(time\s+)?", "", line) if block else ""
        if block and re.match(r"uld\s+[a-z]", body):
            start, cmd = i + 1, re.split(r"\s+#\s", body)[0].rstrip()
            # Continued with a backslash, or by an indented line of options ("[--sample ...]").
            while i + 1 < len(lines) and (cmd.endswith("\\") or re.match(r"\s{6,}[\[-]", lines[i + 1])):
                i += 1
                cmd = cmd.removesuffix("\\").rstrip() + " " + re.split(r"\s+#\s", lines[i].strip())[0]
            found.append((start, cmd.strip()))
        elif not block:
            for m in re.finditer(r"`(uld\s+[a-z][^`]*)`", line):
                if " --" in m.group(1) and "--help" not in m.group(1):
                    found.append((i + 1, "INLINE " + m.group(1)))
            for m in re.finditer(r"`(--set [^`]*)`", line):  # overrides quoted on their own
                found.append((i + 1, "INLINE uld unlearn " + m.group(1)))
        i += 1
    return found


CASES = [(f"{doc.relative_to(ROOT)}:{n}", cmd) for doc in DOCS for n, cmd in _commands(doc.read_text(encoding="utf-8"))]


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option"]


def _args(cmd: str, sub) -> list[str]:
    """The arguments after `uld`: optional groups `[--x V]` unwrapped, "..." dropped, and a
    placeholder value in capitals (`--temperature T`) replaced by 1, which every type accepts."""
    args = [a.removeprefix("[").removesuffix("]") for a in shlex.split(cmd)[2:]]
    args = [a for a in args if a not in ("...", "…", "")]
    takes_value = {o for p in _options(sub) if not p.is_flag and not p.count for o in p.opts}
    for k in range(1, len(args)):
        if args[k - 1] in takes_value and re.fullmatch(r"[A-Z][A-Z0-9_]*", args[k]):
            args[k] = "1"
    return args


def test_commands_are_found():
    """The extractor sees the commands of every page that documents one (guards against a silent zero)."""
    where = {case.split(":")[0] for case, _ in CASES}
    assert {"README.md", "docs/eval.md", "docs/training.md", "docs/performance.md", "docs/benchmark.md"} <= where
    assert len(CASES) >= 15


def test_extractor_joins_continued_lines_and_skips_prose():
    text = "Run `uld bench` or\n\n    uld eval --model M \\\n        --data D --out O   # comment\n\nthen `uld generate --model M --prompt hi`.\n"
    assert _commands(text) == [(3, "uld eval --model M --data D --out O"), (6, "INLINE uld generate --model M --prompt hi")]
    text = "    uld generate --model DIR --prompt 'a b' [--max-new-tokens 128]\n                 [--sample --top-k K]\n"
    assert _commands(text) == [(1, "uld generate --model DIR --prompt 'a b' [--max-new-tokens 128] [--sample --top-k K]")]


@pytest.mark.parametrize("where, cmd", CASES, ids=[c for c, _ in CASES])
def test_documented_command_parses(where, cmd):
    inline = cmd.startswith("INLINE ")
    cmd = cmd.removeprefix("INLINE ")
    group = typer.main.get_command(app)
    name = shlex.split(cmd)[1]
    sub = group.get_command(group.context_class(group), name)
    assert sub is not None, f"{where}: `{cmd}`: no sub-command {name!r}"
    rest = _args(cmd, sub)
    if inline:  # a fragment in prose: the options it shows must exist and parse, the rest is implied
        given = set(rest)
        for p in _options(sub):
            if p.required and not given & set(p.opts):
                rest += [p.opts[0], "1"]
    try:
        ctx = sub.make_context(f"uld {name}", list(rest), parent=group.context_class(group, info_name="uld"))
    except CLICK_ERROR as e:
        pytest.fail(f"{where}: `{cmd}` does not parse: {e.format_message()}")
    if name == "unlearn":
        _check_overrides(where, cmd, ctx.params)


def _check_overrides(where: str, cmd: str, params: dict) -> None:
    """`--set key=value`: the key must name a config option and the value must parse, as
    `uld unlearn` itself checks them (before any run directory exists). Without `--method`, a
    method option (`loss.x`) must belong to some method; `key=value` itself is the placeholder."""
    from uld.errors import UldError
    from uld.methods.base import available_methods
    from uld.train.config import build_config, parse_set

    sets = [x for x in params.get("set_") or [] if x not in ("key=value", "section.key=value") and not x.endswith("=...")]
    if not sets or params.get("config"):
        return
    method = params.get("method")
    methods = [method] if method and method.islower() else available_methods()
    errors = []
    for m in methods:
        try:
            build_config(({"model": "MODEL", "method": m}, ""), (parse_set(sets), " in --set"))
            return
        except UldError as e:
            errors.append(f"{m}: {e}")
    pytest.fail(f"{where}: `{cmd}`: " + (errors[0] if len(errors) == 1 else "no method accepts it; " + "; ".join(errors)))
