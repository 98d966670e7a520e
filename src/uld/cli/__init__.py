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
        code = app(args=argv, standalone_mode=False)
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
    except Exception as e:  # click usage errors and anything unexpected
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        if os.environ.get("ULD_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set ULD_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    if code == INTERRUPTED:
        print("interrupted", file=sys.stderr)
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
