"""The `uld` command. Each sub-command lives in its own module and registers on `app`.

Heavy imports (torch, transformers) happen inside the commands, so `uld --help` is instant.
Errors: a `UldError` (bad input) prints one sentence and exits 2; any other exception prints
one line and exits 1 (set ULD_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys

from uld.cli.app import app

COMMAND_MODULES = ("generate", "export", "unlearn", "augment", "eval", "aggregate", "demo", "bench", "setup", "study", "serve", "lm_eval", "audit")

for _name in COMMAND_MODULES:
    importlib.import_module(f"uld.cli.{_name}")


def main(argv: list[str] | None = None) -> int:
    from uld.errors import UldError

    try:
        app(args=argv, standalone_mode=False)
    except UldError as e:
        print(f"error: {e}", file=sys.stderr)
        return (2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return (130)
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 0)
    except Exception as e:  # click usage errors and anything unexpected
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return (e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            return (1)
        if os.environ.get("ULD_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set ULD_DEBUG=1 for the traceback)", file=sys.stderr)
        return (1)
    return (0)

