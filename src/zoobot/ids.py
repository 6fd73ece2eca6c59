"""How galaxies are named in error messages: one phrasing everywhere."""

from __future__ import annotations

N_IDS_SHOWN = 5


def describe_ids(ids, n_shown: int = N_IDS_SHOWN) -> str:
    """'a, b, c (3 in all)' or 'a, b, ... (1204 in all)'."""
    ids = [str(i) for i in ids]
    shown = ", ".join(ids[:n_shown])
    more = ", ..." if len(ids) > n_shown else ""
    return f"{shown}{more} ({len(ids)} in all)"


def describe_rows(rows, ids=None) -> str:
    """Galaxies by id_str when ``ids`` (positional) is given, else by row index.

    'galaxies a, b (2 in all)' or 'galaxies at rows 3, 7 (2 in all)'.
    """
    rows = [int(r) for r in rows]
    if ids is None:
        return f"galaxies at rows {describe_ids(rows)}"
    id_list = list(ids)  # positional, also for a pandas Series with its own index
    return f"galaxies {describe_ids(id_list[r] for r in rows)}"
