"""The Typer application every command module registers on."""

import logging

import typer
from rich.logging import RichHandler

app = typer.Typer(
    name="zoobot",
    help="Bayesian deep active learning on Galaxy Zoo volunteer votes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False)],
    )


def fail(message: str) -> None:
    """Print a user-facing error and exit with status 1 (no traceback)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)
