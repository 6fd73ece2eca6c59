"""One contract, every registered oracle kind: what the loop relies on when it talks to an oracle.

Each kind provides a ``Case`` below: how to open it on an experiment folder for the test, which
galaxies it can be asked about, and how the outside world answers (nothing to do for the
simulated oracle; volunteers on a stand-in server for live ones). A kind registered without a
case fails ``test_every_registered_kind_has_a_contract_case``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zoobot.catalog import write_catalog
from zoobot.loop.ledger import LABELLED, REQUESTED, Ledger
from zoobot.oracles import list_oracles, open_oracle
from zoobot.schema import SMOOTH_OR_FEATURED

SCHEMA = SMOOTH_OR_FEATURED
IDS = [f"g{i:02d}" for i in range(12)]


class SimulatedCase:
    def __init__(self, root):
        rng = np.random.default_rng(0)
        hidden = pd.DataFrame({"id_str": IDS})
        hidden["smooth-or-featured_smooth"] = rng.integers(0, 30, len(IDS))
        hidden["smooth-or-featured_featured"] = 40 - hidden["smooth-or-featured_smooth"]
        path = root / "oracle.parquet"
        write_catalog(hidden, path, SCHEMA)
        self.settings = {"hidden_votes_path": str(path), "reveal_votes": 7, "duplicate_rate": 0.3, "seed": 1}

    def open(self, experiment_dir):
        experiment_dir.mkdir(parents=True, exist_ok=True)
        return open_oracle("simulated", self.settings, experiment_dir, SCHEMA)

    def answer(self, ids, iteration):
        """Volunteers answer: nothing to do, the simulated oracle reveals hidden votes."""


class PanoptesCase:
    """The Panoptes oracle on a local stand-in of the Panoptes API (tests/panoptes_standin.py).

    Volunteers give each galaxy 4 votes (the retirement limit) plus a repeat and an empty
    classification that must not count: two at once over HTTP, then one more each time the
    oracle looks (time passing between collections), so votes arrive in partial deliveries.
    """

    RETIREMENT_LIMIT = 4

    def __init__(self, root):
        import weakref

        from panoptes_standin import PanoptesStandIn, Volunteers, oracle_settings, write_pool_catalog

        self.standin = PanoptesStandIn(hang_s=0.4)
        weakref.finalize(self, self.standin.close)
        self.volunteers = Volunteers(self.standin)
        credentials = root / "panoptes_credentials.yaml"
        credentials.write_text(f"username: {self.standin.username}\npassword: {self.standin.password}\n")
        catalog = write_pool_catalog(root / "catalogs", IDS)
        self.settings = oracle_settings(
            self.standin, catalog, retirement_limit=self.RETIREMENT_LIMIT, credentials_file=str(credentials)
        )
        self.answered: set[str] = set()

    def open(self, experiment_dir):
        experiment_dir.mkdir(parents=True, exist_ok=True)
        return open_oracle("panoptes", self.settings, experiment_dir, SCHEMA)

    def answer(self, ids, iteration):
        """Volunteers classify every subject of these galaxies not classified yet."""
        import zlib

        later = [[], []]
        for subject_id in sorted(self.standin.subjects, key=int):
            id_str = self.standin.subjects[subject_id]["metadata"].get("id_str")
            if id_str not in ids or subject_id in self.answered:
                continue
            self.answered.add(subject_id)
            votes = [(zlib.crc32(id_str.encode()) >> bit) & 1 for bit in range(self.RETIREMENT_LIMIT)]
            self.volunteers.classify(subject_id, votes[0], user="ann")
            self.volunteers.classify(subject_id, 1 - votes[0], user="ann")  # ann again: not counted
            self.volunteers.classify(subject_id, votes[1], session="logged-out-1")
            self.volunteers.classify(subject_id, None, user="bob")  # no answer: not counted
            later[0].append((self.volunteers.body(subject_id, votes[2], user="bob"), "bob"))
            later[1].append((self.volunteers.body(subject_id, votes[3], session="logged-out-2"), None))
        self.standin.classify_later(later)


class WebCase:
    """People classify on the labelling page: each requested galaxy gets ``votes_needed`` votes,
    each posted through the app's routes (name form, then one POST per question) as a browser does."""

    LABELLERS = ("ada", "ben", "cy")

    def __init__(self, root):
        self.settings = {"votes_needed": len(self.LABELLERS)}
        self.opened = []  # (oracle, {labeller: test client}) of every oracle opened by a test

    def open(self, experiment_dir):
        from zoobot.labelling.app import create_app

        experiment_dir.mkdir(parents=True, exist_ok=True)
        oracle = open_oracle("web", self.settings, experiment_dir, SCHEMA)
        app = create_app(oracle, images=None)
        clients = {}
        for name in self.LABELLERS:
            clients[name] = app.test_client()
            assert clients[name].post("/name", data={"name": name}).status_code == 303
        self.opened.append((oracle, clients))
        return oracle

    def answer(self, ids, iteration):
        """Each labeller classifies each galaxy wherever it is requested and not yet classified."""
        import zlib

        for oracle, clients in self.opened:
            for name, client in clients.items():
                for id_str in ids:
                    if not oracle.is_requested(id_str) or oracle.has_voted(id_str, name):
                        continue
                    column = SCHEMA.answer_columns[(zlib.crc32(id_str.encode()) + len(name)) % 3 == 0]
                    response = client.post("/label", data={"galaxy": id_str, "a": [column]})
                    assert response.status_code == 303, response.text


CASES = {"simulated": SimulatedCase, "panoptes": PanoptesCase, "web": WebCase}


@pytest.fixture(params=list_oracles())
def case(request, tmp_path):
    if request.param not in CASES:
        pytest.fail(f"oracle kind {request.param!r} has no contract case in {__file__}")
    return CASES[request.param](tmp_path)


def new_ledger(path, ids=IDS):
    ledger = Ledger(path, SCHEMA.n_answers, create=True)
    ledger.add_galaxies(ids)
    return ledger


def drive(oracle, ledger, case, requests: dict[int, list[str]], until: int) -> dict[int, list]:
    """Request, answer and collect iteration by iteration as the loop does; deliveries by iteration."""
    collected = {}
    for iteration in range(1, until + 1):
        deliveries = oracle.collect(iteration)
        ledger.record(deliveries, iteration)
        collected[iteration] = deliveries
        ids = requests.get(iteration, [])
        if ids:
            ledger.mark_requested([i for i in ids if i in ledger.ids("unlabelled")], iteration)
            oracle.request(ids, iteration)
            case.answer(ids, iteration)
    return collected


def test_every_registered_kind_has_a_contract_case():
    assert sorted(CASES) == list_oracles()


def test_request_is_idempotent(case, tmp_path):
    once = case.open(tmp_path / "once")
    reference = new_ledger(tmp_path / "once.sqlite")
    drive(once, reference, case, {1: IDS[:6]}, until=6)
    twice = case.open(tmp_path / "twice")
    ledger = new_ledger(tmp_path / "twice.sqlite")
    twice.request(IDS[:6], 1)  # requested before the loop's own request, and again after
    drive(twice, ledger, case, {1: IDS[:6], 2: IDS[:3]}, until=6)
    assert ledger.snapshot() == reference.snapshot()
    assert ledger.labelled_votes()[1].tolist() == reference.labelled_votes()[1].tolist()
    for opened in (once, twice, reference, ledger):
        opened.close()


def test_delivery_ids_are_stable(case, tmp_path):
    first, second = case.open(tmp_path / "a"), case.open(tmp_path / "b")
    ids_by_run = []
    for oracle, name in ((first, "a"), (second, "b")):
        collected = drive(oracle, new_ledger(tmp_path / f"{name}.sqlite"), case, {1: IDS[:5]}, until=5)
        ids_by_run.append(sorted((d.delivery_id, d.id_str, d.counts) for ds in collected.values() for d in ds))
        oracle.close()
    assert ids_by_run[0] == ids_by_run[1]
    assert {i for _, i, _ in ids_by_run[0]} == set(IDS[:5])


def test_collecting_twice_never_counts_a_vote_twice(case, tmp_path):
    oracle = case.open(tmp_path / "exp")
    ledger = new_ledger(tmp_path / "ledger.sqlite")
    ledger.mark_requested(IDS[:4], 1)
    oracle.request(IDS[:4], 1)
    case.answer(IDS[:4], 1)
    handed_over = set()
    for iteration in range(2, 7):
        first = oracle.collect(iteration)
        again = oracle.collect(iteration)  # a crash before recording: the same iteration replays
        assert {d.delivery_id for d in again} >= {d.delivery_id for d in first}
        assert not {d.delivery_id for d in first} & handed_over, "a later iteration handed old deliveries over again"
        handed_over |= {d.delivery_id for d in again}
        ledger.record(first, iteration)
        assert ledger.record(again, iteration) == len({d.delivery_id for d in again} - {d.delivery_id for d in first})
    assert ledger.ids(LABELLED) == IDS[:4]
    assert sum(ledger.n_collected_in(i) for i in range(2, 7)) == len(handed_over)
    oracle.close()
    ledger.close()


def test_a_galaxy_stays_requested_until_its_votes_are_complete(case, tmp_path):
    oracle = case.open(tmp_path / "exp")
    ledger = new_ledger(tmp_path / "ledger.sqlite")
    ledger.mark_requested(IDS[:6], 1)
    oracle.request(IDS[:6], 1)
    assert ledger.ids(REQUESTED) == IDS[:6]
    case.answer(IDS[:6], 1)
    complete = set()
    for iteration in range(2, 7):
        deliveries = oracle.collect(iteration)
        ledger.record(deliveries, iteration)
        complete |= {d.id_str for d in deliveries if d.complete}
        assert set(ledger.ids(LABELLED)) == complete
        assert set(ledger.ids(REQUESTED)) == set(IDS[:6]) - complete
    assert complete == set(IDS[:6])
    oracle.close()
    ledger.close()


def test_closing_and_reopening_loses_nothing(case, tmp_path):
    oracle = case.open(tmp_path / "exp")
    ledger = new_ledger(tmp_path / "ledger.sqlite")
    ledger.mark_requested(IDS[:5], 1)
    oracle.request(IDS[:5], 1)
    case.answer(IDS[:5], 1)
    oracle.close()
    oracle = case.open(tmp_path / "exp")
    handed = oracle.collect(2)
    oracle.close()  # a crash after collecting, before the ledger recorded anything
    oracle = case.open(tmp_path / "exp")
    replayed = oracle.collect(2)
    assert {d.delivery_id for d in replayed} >= {d.delivery_id for d in handed}
    ledger.record(replayed, 2)
    for iteration in range(3, 7):
        ledger.record(oracle.collect(iteration), iteration)
    assert ledger.ids(LABELLED) == IDS[:5]
    oracle.close()
    ledger.close()
