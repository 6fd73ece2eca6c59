import numpy as np
import pandas as pd
import pytest

from zoobot.catalog import write_catalog
from zoobot.loop.ledger import LABELLED, REQUESTED, UNLABELLED, Ledger, LedgerError
from zoobot.oracles import Delivery
from zoobot.oracles.simulated import SimulatedOracle, SimulatedOracleSettings
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", n_answers=2, create=True)
    ledger.add_galaxies(["a", "b", "c", "d"])
    yield ledger
    ledger.close()


def test_states_move_unlabelled_requested_labelled(ledger):
    ledger.mark_requested(["a", "b"], iteration=1)
    assert ledger.counts() == {UNLABELLED: 2, REQUESTED: 2, LABELLED: 0}
    assert ledger.requested_in(1) == ["a", "b"]
    new = ledger.record([Delivery("x1", "a", (3, 1))], iteration=2)
    assert new == 1
    assert ledger.ids(LABELLED) == ["a"]
    assert ledger.snapshot()[0] == ("a", LABELLED, 1, 2)


def test_duplicate_deliveries_are_not_counted_twice(ledger):
    ledger.mark_requested(["a"], iteration=1)
    delivery = Delivery("x1", "a", (3, 1))
    assert ledger.record([delivery, delivery], iteration=2) == 1
    assert ledger.record([delivery], iteration=3) == 0
    assert (ledger.n_collected_in(2), ledger.n_collected_in(3)) == (1, 0)
    ledger.record([Delivery("x2", "a", (1, 1))], iteration=3)
    ids, votes = ledger.labelled_votes()
    assert ids == ["a"]
    np.testing.assert_array_equal(votes, [[4, 2]])
    assert ledger.snapshot()[0][3] == 2  # labelled in the iteration of its first delivery


def test_requesting_twice_or_unknown_ids_fails_atomically(ledger):
    ledger.mark_requested(["a"], iteration=1)
    with pytest.raises(LedgerError, match=r"a \(1 in all\).*requested"):
        ledger.mark_requested(["b", "a"], iteration=2)
    assert ledger.counts()[REQUESTED] == 1  # b was not requested either
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.mark_requested(["zzz"], iteration=2)


def test_votes_for_unrequested_galaxies_are_rejected(ledger):
    ledger.mark_requested(["a"], iteration=1)
    with pytest.raises(LedgerError, match=r"never requested: b \(1 in all\)"):
        ledger.record([Delivery("x1", "a", (1, 0)), Delivery("x2", "b", (1, 0))], iteration=2)
    assert ledger.counts()[LABELLED] == 0  # the valid delivery was rolled back too
    with pytest.raises(LedgerError, match="do not hold 2 vote counts"):
        ledger.record([Delivery("x1", "a", (1, 0, 0))], iteration=2)


def test_opening_a_missing_ledger_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="create-instructions"):
        Ledger(tmp_path / "nothing.sqlite", n_answers=2)
    assert not (tmp_path / "nothing.sqlite").exists()


def test_ledger_survives_reopening(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", n_answers=2, create=True)
    ledger.add_galaxies(["a"])
    ledger.mark_requested(["a"], 1)
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite", n_answers=2)
    assert reopened.ids(REQUESTED) == ["a"]
    assert reopened.add_galaxies(["a", "b"]) == 1
    reopened.close()


def write_oracle(tmp_path, schema, n=20, seed=0):
    """Hidden smooth-or-featured votes, 40 per galaxy."""
    rng = np.random.default_rng(seed)
    hidden = pd.DataFrame({"id_str": [f"g{i}" for i in range(n)]})
    hidden["smooth-or-featured_smooth"] = rng.integers(0, 30, n)
    hidden["smooth-or-featured_featured"] = 40 - hidden["smooth-or-featured_smooth"]
    path = tmp_path / "oracle.parquet"
    write_catalog(hidden, path, schema)
    return path, hidden


def simulated(tmp_path, path, schema, **options):
    return SimulatedOracle(SimulatedOracleSettings(str(path), **options), tmp_path, schema)


def test_simulated_oracle_reveals_after_delay_and_hands_over_once(tmp_path):
    path, hidden = write_oracle(tmp_path, SMOOTH_OR_FEATURED)
    oracle = simulated(tmp_path, path, SMOOTH_OR_FEATURED, delay=1)
    oracle.request(["g1", "g2"], iteration=1)
    oracle.request(["g1"], iteration=2)  # idempotent: g1 keeps its first request
    assert oracle.collect(2) == []
    delivered = oracle.collect(3)
    assert [d.id_str for d in delivered] == ["g1", "g2"]
    expected = hidden.set_index("id_str").loc["g1"].tolist()
    assert list(delivered[0].counts) == expected
    assert oracle.collect(3) == delivered  # the same iteration again: handed over again (crash replay)
    assert oracle.collect(4) == []  # a later iteration gets only new deliveries
    with pytest.raises(KeyError, match=r"no hidden votes for nope"):
        oracle.request(["nope"], 1)
    oracle.close()


def test_simulated_oracle_subsamples_and_duplicates(tmp_path):
    path, hidden = write_oracle(tmp_path, SMOOTH_OR_FEATURED)
    oracle = simulated(tmp_path, path, SMOOTH_OR_FEATURED, reveal_votes=5, duplicate_rate=0.5, seed=3)
    ids = [f"g{i}" for i in range(20)]
    oracle.request(ids, iteration=1)
    delivered = oracle.collect(2)
    assert 20 < len(delivered) < 40  # some, not all, deliveries are handed over twice
    assert {d.id_str for d in delivered} == set(ids)
    full = hidden.set_index("id_str")
    for d in delivered:
        assert sum(d.counts) == 5
        assert all(c <= f for c, f in zip(d.counts, full.loc[d.id_str]))
    assert oracle.collect(2) == delivered
    ledger = Ledger(tmp_path / "ledger.sqlite", 2, create=True)
    ledger.add_galaxies(ids)
    ledger.mark_requested(ids, 1)
    assert ledger.record(delivered, 2) == 20
    assert ledger.labelled_votes()[1].sum() == 100
    ledger.close()
    oracle.close()


def test_simulated_oracle_subsampling_is_consistent_down_the_tree(tmp_path):
    from zoobot.synthetic import make_synthetic_catalog

    catalog = make_synthetic_catalog(30, tmp_path / "synthetic", size=16, channels=1, seed=1)
    path = tmp_path / "oracle.parquet"
    write_catalog(catalog[["id_str", *DECALS_DR5.answer_columns]], path, DECALS_DR5)
    oracle = simulated(tmp_path, path, DECALS_DR5, reveal_votes=10)
    oracle.request(catalog["id_str"].tolist(), iteration=1)
    columns = DECALS_DR5.answer_columns
    for delivery in oracle.collect(2):
        counts = dict(zip(columns, delivery.counts))
        for question, (start, stop) in zip(DECALS_DR5.questions, DECALS_DR5.answer_groups):
            total = sum(delivery.counts[start:stop])
            if not question.asked_after:
                assert total <= 10
            else:
                assert total <= sum(counts[c] for c in question.asked_after)
    oracle.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delay": -1}, r"simulated oracle.delay: expected an integer >= 0, got -1"),
        ({"duplicate_rate": 1.5}, r"duplicate_rate: expected a number in \[0.0, 1.0\], got 1.5"),
        ({"reveal_votes": 0}, r"reveal_votes: expected an integer >= 1, got 0"),
        ({"delay": 1.5}, r"delay: expected an integer >= 0, got 1.5"),
    ],
)
def test_simulated_oracle_settings_are_checked_when_made(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        SimulatedOracleSettings(str(tmp_path / "oracle.parquet"), **options)


def test_partial_deliveries_keep_a_galaxy_requested(ledger):
    ledger.mark_requested(["a"], iteration=1)
    ledger.record([Delivery("p1", "a", (1, 0), complete=False)], iteration=2)
    assert ledger.ids(REQUESTED) == ["a"]
    ledger.record([Delivery("p2", "a", (2, 1), complete=True)], iteration=3)
    assert ledger.ids(LABELLED) == ["a"]
    assert ledger.snapshot()[0] == ("a", LABELLED, 1, 3)
    np.testing.assert_array_equal(ledger.labelled_votes()[1], [[3, 1]])
