"""The ``zoobot`` command line. Each module in this package registers its commands on ``app``."""

import importlib
import pkgutil
import sys

import typer

from zoobot.cli.app import GLOBAL_OPTIONS, app, global_options_first

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    fixed = global_options_first(sys.argv[1:])
    if fixed is not None:
        typer.secho(
            f"error: global options ({', '.join(GLOBAL_OPTIONS)}) go before the command: zoobot {' '.join(fixed)}",
            fg=typer.colors.RED, err=True,
        )
        sys.exit(2)
    app()
