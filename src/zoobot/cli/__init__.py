"""The ``zoobot`` command line. Each module in this package registers its commands on ``app``."""

import importlib
import pkgutil

from zoobot.cli.app import app

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    app()
