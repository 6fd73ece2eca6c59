"""The Typer application every command module registers on."""

import logging
import os
import sys
import warnings
from typing import Optional

import typer
from rich.logging import RichHandler
from typer.core import TyperOption

app = typer.Typer(
    name="zoobot",
    help="Bayesian deep active learning on Galaxy Zoo volunteer votes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


GLOBAL_OPTIONS = ("--verbose", "-v", "--threads")

# Lightning options of the commands that train a model in their own process (train, pretrain)
TRAIN_PRECISION = typer.Option("32-true", help="Lightning precision: 32-true, bf16-mixed (CPU too), 16-mixed (GPU).")
TRAIN_ACCELERATOR = typer.Option("auto", help="Lightning accelerator: auto, cpu, gpu.")
TRAIN_DEVICES = typer.Option("auto", help="Lightning devices: auto, 2, 0,1.")
TRAIN_NUM_NODES = typer.Option(1, help="Machines for multi-node DDP.")
TRAIN_NUM_WORKERS = typer.Option(0, help="DataLoader worker processes per device.")


def _value_placeholder(option: TyperOption, ctx) -> Optional[str]:
    """Help shows <int>, <path> ... for options that take a value, nothing for switches."""
    return None if option.is_flag else _typer_value_placeholder(option, ctx)


_typer_value_placeholder = TyperOption.display_type_rich
TyperOption.display_type_rich = _value_placeholder


def global_options_first(argv: list[str]) -> Optional[list[str]]:
    """``argv`` with global options given after the command moved before it; None if none were."""
    command_at = next(
        (n for n, arg in enumerate(argv) if not arg.startswith("-") and (n == 0 or argv[n - 1] != "--threads")), None
    )
    if command_at is None:
        return None
    moved, rest, n = [], [], command_at + 1
    while n < len(argv):
        name = argv[n].split("=")[0]
        if name in GLOBAL_OPTIONS:
            takes_value = name == "--threads" and "=" not in argv[n]
            moved += argv[n:n + 1 + takes_value]
            n += 1 + takes_value
        else:
            rest.append(argv[n])
            n += 1
    if not moved:
        return None
    return argv[:command_at] + moved + argv[command_at:command_at + 1] + rest


def log_handler() -> logging.Handler:
    """Rich's handler on a terminal; plain unwrapped lines in files, pipes and CI logs."""
    if sys.stdout.isatty():
        return RichHandler(show_path=False, show_time=False)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    return handler


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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[log_handler()], force=True)
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


def old_spelling(old: str, help_text: str = "Deprecated spelling, kept for one release."):
    """A hidden option for a deprecated spelling; resolve it with ``renamed``."""
    return typer.Option(None, old, hidden=True, help=help_text)


def renamed(value, old_value, old: str, new: str):
    """The value of option ``new``, or of its deprecated spelling ``old`` (with a warning).

    Both given is an error. Options that became positional arguments pass their argument name
    as ``new``; a missing required value is reported by ``required``.
    """
    if old_value is None:
        return value
    if value is not None:
        fail(f"{old} is the old spelling of {new}; give only {new}")
    typer.secho(
        f"warning: {old} is deprecated and will be removed in the next release; use {new}",
        fg=typer.colors.YELLOW, err=True,
    )
    return old_value


def required(value, name: str):
    """``value``, or exit 1 saying that ``name`` is missing."""
    if value is None:
        fail(f"missing {name}; see --help")
    return value


def torch_device(accelerator: str) -> str:
    """Lightning's accelerator name -> the torch device for in-process inference."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"
