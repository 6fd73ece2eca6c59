"""The progress callback that long library operations accept; the CLI turns it into a bar."""

from typing import Callable

ProgressCallback = Callable[[int, int], None]  # (n_done, n_total)
