"""The Typer application every command module registers on."""

import logging
import os
import sys
import warnings
from typing import Optional

import typer
from rich.logging import RichHandler

app = typer.Typer(
    name="zoobot",
    help="Bayesian deep active learning on Galaxy Zoo volunteer votes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for PyTorch. On a shared machine, 1 per process avoids oversubscription."
    ),
) -> None:
    if threads is not None:
        if threads < 1:
            fail(f"--threads must be at least 1, got {threads}")
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False)],
    )
    if not verbose:
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def quiet_lightning() -> None:
    """Lightning adds its own INFO console handler on import; keep only its warnings, via ours.

    Call after importing code that imports Lightning (unless --verbose was given).
    """
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("lightning").handlers.clear()
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str) -> None:
    """Print a user-facing error and exit with status 1 (no traceback)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)
