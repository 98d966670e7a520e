"""The `uld` command. Each sub-command lives in its own module and registers on `app`.

Heavy imports (torch, transformers) happen inside the commands, so `uld --help` is instant.
Errors: a `UldError` (bad input) prints one sentence and exits 2; Ctrl-C exits 130 (with the
`uld.errors.Interrupted` message when the command raised one); any other exception prints one
line and exits 1 (set ULD_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys

from uld.cli.app import app

COMMAND_MODULES = ("generate", "export", "unlearn", "augment", "eval", "aggregate", "demo", "bench", "setup", "study", "serve", "lm_eval", "audit")

for _name in COMMAND_MODULES:
    importlib.import_module(f"uld.cli.{_name}")


INTERRUPTED = 130  # 128 + SIGINT, the shell's code for a command stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run `uld` with `argv` (default: the process's arguments) and return the exit code: 0 done,
    1 unexpected failure, 2 bad input (one sentence), 130 interrupted."""
    from uld.errors import Interrupted, UldError

    try:
        # Outside standalone mode typer returns the exit code of `typer.Exit` and of Ctrl-C (130).
        code = app(args=argv, prog_name="uld", standalone_mode=False)
    except UldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(str(e) or "interrupted", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except OSError as e:  # a full disk, a read-only or vanished directory: the environment, not the input
        from uld.io import describe_os_error

        if os.environ.get("ULD_DEBUG"):
            raise
        print(f"error: {describe_os_error(e)}; nothing was written", file=sys.stderr)
        return 1
    except Exception as e:  # usage errors and anything unexpected
        usage = _usage_error(e, sys.argv[1:] if argv is None else argv)
        if usage is not None:
            if usage:  # empty after `uld` alone: the help was printed
                print(f"error: {usage}", file=sys.stderr)
            return 2
        if _is_click(e, "Abort"):
            return 1
        if _is_click(e, "ClickException"):
            e.show()  # type: ignore[attr-defined]
            return e.exit_code  # type: ignore[attr-defined]
        if os.environ.get("ULD_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set ULD_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    if code == INTERRUPTED:
        print("interrupted", file=sys.stderr)
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _is_click(e: BaseException, name: str) -> bool:
    """Whether `e` is click's exception `name` (typer ships its own copy of click's classes)."""
    return any(c.__name__ == name and c.__module__.split(".")[0] in ("click", "typer") for c in type(e).__mro__)


def _usage_error(e: BaseException, argv: list[str] | None = None) -> str | None:
    """A bad command line (unknown option or command, a value of the wrong type, a missing
    option) as one sentence pointing at the command's help; None for anything else."""
    if not _is_click(e, "UsageError"):
        return None
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "uld"
    if where == "uld" and argv and argv[0] in _command_names():  # an error raised before the sub-command's context
        where = f"uld {argv[0]}"
    message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    if not message:
        return ""
    value = _given_value(argv or [], getattr(getattr(e, "param", None), "opts", None) or [])
    if value is not None and repr(value) not in message:  # name the value that was refused
        message = f"{message.rstrip('.')}; got {value!r}"
    return f"{message.rstrip('.')} (see `{where} --help`)"


def _command_names() -> set[str]:
    import typer

    group = typer.main.get_command(app)
    return set(group.list_commands(group.context_class(group)))


def _given_value(argv: list[str], opts: list[str]) -> str | None:
    """The value given to option `opts` on the command line (`--x V` or `--x=V`; the last wins)."""
    value = None
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(opt + "="):
                value = arg[len(opt) + 1:]
    return value
