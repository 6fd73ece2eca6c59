"""Oracles answer vote requests: one interface for simulated, Panoptes and local-web oracles.

An oracle has two methods:

- ``request(ids, iteration)``: ask volunteers to classify these galaxies. Idempotent: asking
  again for ids already requested changes nothing.
- ``collect(iteration) -> list[Delivery]``: every delivery of votes available now. Each delivery
  has a stable ``delivery_id``; the ledger ignores ids it has seen, so collecting twice, or an
  oracle that delivers a response twice, never counts a vote twice.
"""

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Delivery:
    """Votes for one galaxy from one oracle response. counts: (n_answers,) int."""

    delivery_id: str
    id_str: str
    counts: tuple[int, ...]


class Oracle(Protocol):
    def request(self, ids: Sequence[str], iteration: int) -> None: ...

    def collect(self, iteration: int) -> list[Delivery]: ...

    def close(self) -> None: ...
