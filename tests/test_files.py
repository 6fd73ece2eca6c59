"""Atomic writes: a path has its old content or its complete new content, never half."""

import os

import pytest

from zoobot.files import atomic_path, write_json_atomic


class Boom(Exception):
    pass


def test_a_file_appears_only_when_complete_and_an_error_keeps_the_old_content(tmp_path):
    path = tmp_path / "table.csv"
    with atomic_path(path) as tmp:
        tmp.write_text("old")
        assert not path.exists()
    assert path.read_text() == "old"
    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise Boom
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_folders_and_leftovers_of_a_killed_process(tmp_path):
    target = tmp_path / "catalogs"
    stale = tmp_path / f".catalogs.tmp-{os.getpid()}"  # as a killed process with this pid left it
    stale.mkdir()
    (stale / "partial.parquet").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "labelled.parquet").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["labelled.parquet"]
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "other") as tmp:
            tmp.mkdir()
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogs"]
    write_json_atomic(tmp_path / "a.json", {"n": 1})
    assert (tmp_path / "a.json").read_text() == '{\n  "n": 1\n}'
