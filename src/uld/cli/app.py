"""The Typer application every `uld` sub-command registers on."""

import typer

app = typer.Typer(
    name="uld",
    help="LLM unlearning with ULD (Unlearning from Logit Difference) and the field's baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
