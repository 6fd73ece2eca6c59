"""The oracle contract: what every oracle (simulated, Panoptes, local web page) must do.

- ``request(ids, iteration)``: ask for votes on these galaxies. Idempotent: asking again for ids
  already requested changes nothing (a galaxy keeps the iteration of its first request).
- ``collect(iteration) -> list[Delivery]``: the deliveries handed over in this iteration. Calling
  it again with the same iteration hands the same deliveries over again (plus any that arrived
  since), so a crash between collecting and recording loses nothing; a later iteration gets only
  deliveries not handed over before. Each delivery has a stable ``delivery_id``; the ledger ignores
  ids it has seen, so a delivery handed over twice never counts twice.
- A galaxy's votes may come in several deliveries; ``Delivery.complete`` says whether the galaxy
  needs no more votes. Until a complete delivery arrives the galaxy stays ``requested``.
- ``close()``: release files and connections; everything requested or handed over persists, and
  an oracle opened again on the same experiment carries on where it stopped.
- ``live``: True when people answer (votes come hours or days later): ``zoobot run`` then trains
  and acquires only once the previous iteration's galaxies are complete or its deadline passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Delivery:
    """Votes for one galaxy from one oracle response. counts: (n_answers,) int."""

    delivery_id: str
    id_str: str
    counts: tuple[int, ...]
    complete: bool = True  # False: more votes will come; the galaxy stays requested


class Oracle(Protocol):
    live: bool  # people answer: the loop waits for their votes

    def request(self, ids: Sequence[str], iteration: int) -> None: ...

    def collect(self, iteration: int) -> list[Delivery]: ...

    def close(self) -> None: ...
