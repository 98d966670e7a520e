"""Every `uld ...` command written in README.md and docs/*.md parses with the real CLI.

Commands are taken from code blocks (fenced or indented; `\\` continues a line; a leading `$ `,
`time ` or a path such as `.venv/bin/` is dropped) and from inline code spans that pass an option
(`uld unlearn --method npo`, or a lone `--set key=value` which is read as `uld unlearn`). Each is
parsed by click with the real `uld` application, which checks the sub-command, every option name,
the number of arguments and each value's type, without running anything. `--set KEY=VALUE`
overrides of `uld unlearn` are also checked against the run config and the named method's
options, as `uld unlearn` checks them before a run directory exists.

The conventions the docs follow (docs/reliability.md, "Commands in the docs"):
- A word in capitals (`DIR`, `RUN`, `RETAIN_LOG`), a shell variable (`"$M"`) or `...` in the
  place of a value is a placeholder: it stands for a value the reader supplies.
- `...` in the place of options stands for the options shown in the nearby full command: the
  command's required options are taken as given.
- `[--sample --top-k K]` marks an optional part; it is parsed as written.
- In `--set`, a key with a capitalised part (`loss.OPTION`) is a placeholder and is not checked;
  a real key with a placeholder value (`--set policy.kind=...`) has its key checked.
- An example of a command that uld refuses is marked, and the test expects it to be refused: in a
  code block by a comment starting `# refused`, in prose by `<!-- refused -->` right after the
  closing backtick.
- A Python block whose first line is `# src/uld/methods/NAME.py` is a worked example of a new
  method: it is executed (so it must run against the current API) and the commands of the same
  page may use the method it registers.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
import typer

import uld.cli  # noqa: F401  (registers every sub-command on the app)
from uld.cli.app import app

CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")  # typer's copy of click
ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\}|\.\.\.|…")
REFUSED_INLINE = "<!-- refused -->"
EXAMPLE_HEADER = re.compile(r"#\s*src/uld/methods/(\w+)\.py\s*$")


@dataclasses.dataclass(frozen=True)
class Command:
    line: int
    text: str
    inline: bool = False
    refused: bool = False


def _comment(line: str) -> tuple[str, str]:
    """(command, comment) of one shell line: a comment starts with ` # `."""
    parts = re.split(r"\s+#(?=\s|$)", line, maxsplit=1)
    return parts[0].rstrip(), (parts[1].strip() if len(parts) > 1 else "")


def _commands(text: str) -> list[Command]:
    """Each `uld` command in a markdown text."""
    found: list[Command] = []
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
        body = re.sub(r"^\s*(\$\s+)?(time\s+)?([\w./-]*/)?", "", line) if block else ""
        if block and re.match(r"uld\s+[a-z]", body):
            start = i + 1
            cmd, comment = _comment(body)
            # Continued with a backslash, or by an indented line of options ("[--sample ...]").
            while i + 1 < len(lines) and (cmd.endswith("\\") or re.match(r"\s{6,}[\[-]", lines[i + 1])):
                i += 1
                more, more_comment = _comment(lines[i].strip())
                cmd, comment = cmd.removesuffix("\\").rstrip() + " " + more, comment or more_comment
            found.append(Command(start, cmd.strip(), refused=comment.lower().startswith("refused")))
        elif not block:
            spans = [(m, m.group(1)) for m in re.finditer(r"`(uld\s+[a-z][^`]*)`", line)]
            spans += [(m, "uld unlearn " + m.group(1)) for m in re.finditer(r"`(--set [^`]*)`", line)]
            for m, cmd in sorted(spans, key=lambda s: s[0].start()):
                if cmd.startswith("uld unlearn --set") or (" --" in cmd and "--help" not in cmd):
                    refused = line[m.end():].lstrip().startswith(REFUSED_INLINE)
                    found.append(Command(i + 1, cmd, inline=True, refused=refused))
        i += 1
    return found


def _examples(text: str) -> dict[str, str]:
    """Worked examples of new methods: {method name: the Python source of its file}."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    out = {}
    for block in blocks:
        m = EXAMPLE_HEADER.match(block.splitlines()[0]) if block.strip() else None
        if m:
            out[m.group(1)] = block
    return out


PAGES = {doc.relative_to(ROOT).as_posix(): doc.read_text(encoding="utf-8") for doc in DOCS}
CASES = [(f"{page}:{c.line}", page, c) for page, text in PAGES.items() for c in _commands(text)]


@pytest.fixture
def worked_examples(request):
    """Registers the page's worked-example methods for one test, and removes them afterwards."""
    from uld.methods import base

    page = request.node.callspec.params["page"]
    added = []
    try:
        for name, source in _examples(PAGES[page]).items():
            if name in base.available_methods():
                continue
            module = types.ModuleType(f"uld_docs_example_{name}")
            sys.modules[module.__name__] = module
            added.append((name, module.__name__))
            exec(compile(source, f"{page} ({name} example)", "exec"), module.__dict__)
        yield
    finally:
        for name, module_name in added:
            base._REGISTRY.pop(name, None)
            sys.modules.pop(module_name, None)


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option"]


def _args(cmd: str, sub) -> tuple[list[str], bool]:
    """The arguments after `uld` with optional groups `[--x V]` unwrapped and each placeholder
    value of a typed option (a number, a choice) replaced by 1, which every type accepts; and
    whether `...` stood for options."""
    words = shlex.split(cmd)[2:]
    args = []
    for w in words:  # `[--sample` and `K]` lose their brackets; a value such as `[5,6,7]` keeps them
        if w.startswith("[") and (w[1:2] == "-" or w.count("[") > w.count("]")):
            w = w[1:]
        if w.endswith("]") and w.count("]") > w.count("["):
            w = w[:-1]
        args.append(w)
    takes_value = {o: p for p in _options(sub) if not p.is_flag and not p.count for o in p.opts}
    out, fragment = [], False
    for k, a in enumerate(args):
        option = takes_value.get(args[k - 1]) if k > 0 else None
        if option is not None and PLACEHOLDER.fullmatch(a):
            out.append(a if re.search(r"\b(str|Path)\b", option.bare_type()) else "1")
        elif a in ("...", "…", ""):
            fragment = fragment or a != ""
        else:
            out.append(a)
    return out, fragment


def _parse(cmd: str, inline: bool):
    """Parse one command with the real CLI: (sub-command name, click context)."""
    group = typer.main.get_command(app)
    name = shlex.split(cmd)[1]
    sub = group.get_command(group.context_class(group), name)
    if sub is None:
        raise LookupError(f"no sub-command {name!r}")
    rest, fragment = _args(cmd, sub)
    if inline or fragment:  # the options it shows must exist and parse, the rest is implied
        given = set(rest)
        for p in _options(sub):
            if p.required and not given & set(p.opts):
                rest += [p.opts[0], "1"]
    return name, sub.make_context(f"uld {name}", list(rest), parent=group.context_class(group, info_name="uld"))


def _check_overrides(params: dict) -> None:
    """`--set key=value` as `uld unlearn` checks it (raises UldError). Without `--method`, a
    method option (`loss.x`) must belong to some method."""
    from uld.errors import UldError
    from uld.methods.base import available_methods, get_method
    from uld.train.config import build_config, option_names, parse_set

    items = params.get("set_") or []
    if not items or params.get("config"):
        return
    sets, keys_only = [], []
    for item in items:
        key, _, value = item.partition("=")
        if any(PLACEHOLDER.fullmatch(part) for part in key.split(".")):
            continue  # `loss.OPTION=VALUE`: the whole item is a placeholder
        if PLACEHOLDER.fullmatch(value):
            keys_only.append(key)
        else:
            sets.append(item)
    method = params.get("method")
    methods = [method] if method and not PLACEHOLDER.fullmatch(method) else available_methods()
    errors = []
    for m in methods:
        try:
            build_config(({"model": "MODEL", "method": m}, ""), (parse_set(sets), " in --set"))
            for key in keys_only:
                section, _, name = key.partition(".")
                known = {f.name for f in dataclasses.fields(get_method(m).options)} if section == "loss" else None
                if (known is None and key not in option_names()) or (known is not None and name not in known):
                    raise UldError(f"{m}: unknown option {key!r}")
            return
        except UldError as e:
            errors.append(f"{m}: {e}")
    raise UldError(errors[0] if len(errors) == 1 else "no method accepts it; " + "; ".join(errors))


def _refusal(cmd: Command) -> str | None:
    """Why the command is refused (a one-line reason), or None when it parses and checks out."""
    from uld.errors import UldError

    try:
        name, ctx = _parse(cmd.text, cmd.inline)
        if name == "unlearn":
            _check_overrides(ctx.params)
    except CLICK_ERROR as e:
        return f"does not parse: {e.format_message()}"
    except (LookupError, UldError) as e:
        return str(e)
    return None


def test_commands_are_found():
    """The extractor sees the commands of every page that documents one (guards against a silent zero)."""
    where = {page for _, page, _ in CASES}
    assert {"README.md", "docs/eval.md", "docs/training.md", "docs/performance.md", "docs/benchmark.md"} <= where
    assert len(CASES) >= 15
    assert sum(c.refused for _, _, c in CASES) >= 2  # the bad-input examples are still seen as such


def test_extractor_joins_continued_lines_and_skips_prose():
    text = "Run `uld bench` or\n\n    uld eval --model M \\\n        --data D --out O   # comment\n\nthen `uld generate --model M --prompt hi`.\n"
    assert [(c.line, c.text, c.inline) for c in _commands(text)] == [
        (3, "uld eval --model M --data D --out O", False), (6, "uld generate --model M --prompt hi", True)]
    text = "    uld generate --model DIR --prompt 'a b' [--max-new-tokens 128]\n                 [--sample --top-k K]\n"
    assert [c.text for c in _commands(text)] == ["uld generate --model DIR --prompt 'a b' [--max-new-tokens 128] [--sample --top-k K]"]
    text = "    $ .venv/bin/uld eval --model M   # refused: no --data\n`--set loss.beta=abc` <!-- refused --> but `--set loss.beta=1`\n"
    assert [(c.text, c.refused) for c in _commands(text)] == [
        ("uld eval --model M", True), ("uld unlearn --set loss.beta=abc", True), ("uld unlearn --set loss.beta=1", False)]


def test_placeholders_bad_values_and_list_values():
    """The conventions above, on commands the test builds itself."""
    ok = ["uld unlearn --out RUN --method rmu --set loss.update_layers=[5,6,7]",
          "uld unlearn --out RUN --method NAME --set loss.OPTION=VALUE",
          "uld unlearn --out RUN --set policy.kind=...",
          'uld generate --model "$M" --prompt hi --max-new-tokens N',
          "uld lm-eval --model RUN --tasks ... [--include-path DIR]",
          "uld eval ... --protocol openunlearning"]
    bad = ["uld unlearn --out RUN --method rmu --set loss.update_layers=[5,6,x]",
           "uld unlearn --out RUN --set loss.beta=abc",
           "uld unlearn --out RUN --set policy.kindd=...",
           "uld unlearn --out RUN --method npo --set loss.nope=...",
           "uld generate --model M --prompt hi --max-new-tokens many",
           "uld eval --protocol openunlearning"]
    assert [_refusal(Command(0, c)) for c in ok] == [None] * len(ok)
    assert all(_refusal(Command(0, c)) for c in bad)


@pytest.mark.parametrize("where, page, cmd", CASES, ids=[w for w, _, _ in CASES])
def test_documented_command_parses(where, page, cmd, worked_examples):
    reason = _refusal(cmd)
    if cmd.refused:
        assert reason, f"{where}: `{cmd.text}` is marked as refused, but uld accepts it"
    elif reason:
        pytest.fail(f"{where}: `{cmd.text}`: {reason} (if the docs show it being refused, mark it: "
                    f"`# refused` in a code block, {REFUSED_INLINE} after an inline span)")
