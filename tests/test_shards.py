"""Writing and reading shards: round trips, bad images, atomicity, the reader and the CLI."""

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoobot.catalog import write_catalog
from zoobot.cli import app
from zoobot.cli.shards import warn_if_crop_differs
from zoobot.images import load_image
from zoobot.schema import SMOOTH_OR_FEATURED
from zoobot.shards import (
    BAD_IMAGES_NAME,
    CONFIG_NAME,
    BadImagesError,
    ShardError,
    ShardReader,
    write_shards,
)
from zoobot.shards.format import crop_fraction_of

SCHEMA = SMOOTH_OR_FEATURED
VOTES = SCHEMA.answer_columns


def make_catalog(folder: Path, n: int, prefix: str = "g", seed: int = 0, side: int = 32) -> pd.DataFrame:
    """n random side x side RGB PNGs and a catalog with random votes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"{prefix}{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        rows.append({"id_str": f"{prefix}{i:04d}", "file_loc": str(path), **{c: int(rng.integers(0, 9)) for c in VOTES}})
    return pd.DataFrame(rows)


@pytest.fixture
def catalogs(tmp_path):
    labelled = make_catalog(tmp_path / "images", 30, "lab")
    unlabelled = make_catalog(tmp_path / "images", 12, "unl", seed=1).assign(**{c: 0 for c in VOTES})
    return labelled, unlabelled


@pytest.fixture
def shard_dir(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    write_shards(labelled, unlabelled, tmp_path / "shards", SCHEMA, val_size=6, test_size=5, size=32, shard_size=4)
    return tmp_path / "shards"


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_across_shards(tmp_path, catalogs, channels):
    labelled, unlabelled = catalogs
    summary = write_shards(
        labelled, unlabelled, tmp_path / "shards", SCHEMA, val_size=6, test_size=5, size=32, channels=channels,
        shard_size=4,
    )
    assert summary.counts == {"train": 19, "val": 6, "test": 5, "pool": 12}
    assert summary.n_shards == 5 + 2 + 2 + 3 and summary.n_bad == 0

    reader = ShardReader(tmp_path / "shards")
    assert (reader.size, reader.channels, reader.vote_columns) == (32, channels, VOTES)
    assert sorted(p.name for p in (tmp_path / "shards" / "train").iterdir()) == [
        f"shard_{i:05d}.npy" for i in range(5)
    ]
    both = pd.concat([labelled, unlabelled], ignore_index=True)
    positions = reader.positions(both["id_str"])
    expected = np.stack([load_image(p, 32, channels) for p in both["file_loc"]])
    np.testing.assert_array_equal(reader.images(positions), expected)
    np.testing.assert_array_equal(reader.votes(positions), both[VOTES].to_numpy())
    if channels == 3:  # 32 px PNGs are stored untouched
        with Image.open(both["file_loc"][7]) as png:
            np.testing.assert_array_equal(reader.image(both["id_str"][7]), np.asarray(png).transpose(2, 0, 1))
    # every shard file is a plain .npy that numpy memory-maps
    array = np.load(tmp_path / "shards" / "train" / "shard_00004.npy", mmap_mode="r")
    assert array.shape == (3, channels, 32, 32) and array.dtype == np.uint8  # 19 = 4 + 4 + 4 + 4 + 3


def test_splits_follow_catalog_order_and_limits(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    write_shards(
        labelled, unlabelled, tmp_path / "s", SCHEMA, val_size=5, size=32, max_labelled=10, max_unlabelled=3
    )
    reader = ShardReader(tmp_path / "s")
    assert list(reader.ids("val")) == list(labelled["id_str"][:5])
    assert list(reader.ids("train")) == list(labelled["id_str"][5:15])
    assert list(reader.ids("pool")) == list(unlabelled["id_str"][:3])
    config = reader.config
    assert {s: config["splits"][s]["count"] for s in ("train", "val", "test", "pool")} == {"train": 10, "val": 5, "test": 0, "pool": 3}
    assert config["schema"] == SCHEMA.name and config["size"] == 32
    assert set(config["checksums"]["sha256"]) >= {"manifest.parquet", "train/shard_00000.npy"}


def test_workers_give_identical_shards(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    for workers in (1, 2):
        write_shards(labelled, unlabelled, tmp_path / f"w{workers}", SCHEMA, val_size=6, size=16, shard_size=8, workers=workers)
    one, two = (ShardReader(tmp_path / f"w{w}") for w in (1, 2))
    assert one.config["checksums"]["sha256"] == two.config["checksums"]["sha256"]


def test_progress_callback_counts_every_image(tmp_path, catalogs):
    calls = []
    write_shards(*catalogs, tmp_path / "s", SCHEMA, val_size=6, size=16, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(i, 42) for i in range(1, 43)]


def break_images(catalog: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """Row 3 points at a missing file, row 8 at a corrupt one."""
    catalog = catalog.copy()
    catalog.loc[3, "file_loc"] = str(tmp_path / "nowhere.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    catalog.loc[8, "file_loc"] = str(corrupt)
    return catalog


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".shards")]


def test_bad_images_fail_the_run_naming_all_of_them(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    corrupt = break_images(labelled, tmp_path)
    corrupt.loc[3, "file_loc"] = labelled.loc[3, "file_loc"]  # only decoding errors, found while writing
    corrupt.loc[20, "file_loc"] = str(tmp_path / "corrupt.png")
    with pytest.raises(BadImagesError) as caught:
        write_shards(corrupt, unlabelled, tmp_path / "shards", SCHEMA, val_size=6, size=32, shard_size=4)
    message = str(caught.value)
    assert "lab0008" in message and "lab0020" in message and "--skip-bad" in message
    assert list(caught.value.bad["id_str"]) == ["lab0008", "lab0020"]
    assert list(caught.value.bad["reason"].str.startswith("cannot decode")) == [True, True]
    assert not (tmp_path / "shards").exists() and leftovers(tmp_path) == []


def test_missing_files_fail_before_decoding(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    missing = labelled.copy()
    missing.loc[3, "file_loc"] = str(tmp_path / "nowhere.png")
    calls = []
    with pytest.raises(BadImagesError, match=r"lab0003 \(.*nowhere.png\): file not found"):
        write_shards(missing, unlabelled, tmp_path / "shards", SCHEMA, val_size=6, size=32, progress=lambda d, n: calls.append(d))
    assert calls == [] and not (tmp_path / "shards").exists() and leftovers(tmp_path) == []


def test_skip_bad_lists_bad_images(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    summary = write_shards(
        break_images(labelled, tmp_path), unlabelled, tmp_path / "shards", SCHEMA, val_size=6, size=32, skip_bad=True
    )
    assert summary.n_bad == 2 and summary.counts == {"train": 23, "val": 5, "test": 0, "pool": 12}
    bad = pd.read_csv(tmp_path / "shards" / BAD_IMAGES_NAME)
    assert list(bad["id_str"]) == ["lab0008", "lab0003"]
    assert list(bad["split"]) == ["train", "val"]
    assert bad["reason"].str.contains("file not found").sum() == 1
    assert bad["reason"].str.contains("cannot decode").sum() == 1
    reader = ShardReader(tmp_path / "shards")
    assert reader.config["n_bad_images"] == 2
    with pytest.raises(KeyError, match="lab0003"):
        reader.positions(["lab0003"])


def test_refuses_a_non_empty_shard_dir_but_fills_an_empty_one(tmp_path, catalogs):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_shards(*catalogs, tmp_path / "full", SCHEMA, val_size=6, size=16)
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    write_shards(*catalogs, tmp_path / "empty", SCHEMA, val_size=6, size=16)
    assert len(ShardReader(tmp_path / "empty")) == 42


def test_bad_settings_and_catalogs(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    with pytest.raises(ShardError, match=r"val_size \+ test_size = 20 \+ 11 is larger"):
        write_shards(labelled, unlabelled, tmp_path / "s", SCHEMA, val_size=20, test_size=11)
    with pytest.raises(ShardError, match="lab0000.*both"):
        write_shards(labelled, pd.concat([unlabelled, labelled[:1]]), tmp_path / "s", SCHEMA, val_size=6)
    with pytest.raises(ValueError, match="channels must be 1"):
        write_shards(labelled, unlabelled, tmp_path / "s", SCHEMA, val_size=6, channels=2)
    assert not (tmp_path / "s").exists()


def test_crop_fraction_is_recorded_and_applied(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    write_shards(labelled, unlabelled, tmp_path / "whole", SCHEMA, val_size=6, size=16)
    write_shards(labelled, unlabelled, tmp_path / "centre", SCHEMA, val_size=6, size=16, crop_fraction=0.5)
    whole, centre = ShardReader(tmp_path / "whole"), ShardReader(tmp_path / "centre")
    assert whole.config["crop_fraction"] == 1.0 and centre.config["crop_fraction"] == 0.5
    assert crop_fraction_of(centre.config) == 0.5
    assert crop_fraction_of({k: v for k, v in whole.config.items() if k != "crop_fraction"}) == 1.0  # older folders
    # 32 px PNGs cropped to their central 16 px: stored untouched, and unlike the resized whole
    path = labelled["file_loc"][0]
    with Image.open(path) as png:
        expected = np.asarray(png)[8:24, 8:24].transpose(2, 0, 1)
    np.testing.assert_array_equal(centre.image(labelled["id_str"][0]), expected)
    assert not np.array_equal(whole.image(labelled["id_str"][0]), expected)
    # different pixels, so different checksums: the two folders cannot pass for each other
    digests = (reader.config["checksums"]["sha256"]["train/shard_00000.npy"] for reader in (whole, centre))
    assert len(set(digests)) == 2
    centre.verify()


@pytest.mark.parametrize("bad", [0.0, -1.0, 1.5, float("nan")])
def test_bad_crop_fraction_is_refused_before_any_work(tmp_path, catalogs, bad):
    with pytest.raises(ValueError, match=r"crop_fraction: expected a number in \(0, 1\].*got"):
        write_shards(*catalogs, tmp_path / "s", SCHEMA, val_size=6, size=16, crop_fraction=bad)
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.tmp-*"))


def test_reader_rejects_incomplete_and_altered_dirs(tmp_path, shard_dir):
    with pytest.raises(ShardError, match="does not exist"):
        ShardReader(tmp_path / "absent")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(shard_dir, incomplete)
    (incomplete / CONFIG_NAME).unlink()
    with pytest.raises(ShardError, match=f"not a complete shard folder: it has no {CONFIG_NAME}"):
        ShardReader(incomplete)

    altered = tmp_path / "altered"
    shutil.copytree(shard_dir, altered)
    (altered / "pool" / "shard_00001.npy").unlink()
    with pytest.raises(ShardError, match="pool/shard_00001.npy"):
        ShardReader(altered)


def test_verify_detects_changed_pixels(tmp_path, shard_dir):
    ShardReader(shard_dir).verify()
    with open(shard_dir / "val" / "shard_00001.npy", "r+b") as file:
        file.seek(-1, os.SEEK_END)
        file.write(b"\x00" if file.read(1) != b"\x00" else b"\x01")
    with pytest.raises(ShardError, match="val/shard_00001.npy"):
        ShardReader(shard_dir).verify()


def test_positions_of_unknown_ids(shard_dir):
    reader = ShardReader(shard_dir)
    assert list(reader.positions(["lab0000", "unl0003"])) == [
        int(np.flatnonzero(reader.manifest["id_str"] == i)[0]) for i in ("lab0000", "unl0003")
    ]
    with pytest.raises(KeyError, match=r"nope, missing \(2 in all\)"):
        reader.positions(["lab0001", "nope", "missing"])
    with pytest.raises(TypeError, match="list of ids"):
        reader.positions("lab0001")
    with pytest.raises(IndexError, match="outside the manifest"):
        reader.images([0, 42])


def test_iter_batches_covers_every_id_in_order(shard_dir):
    reader = ShardReader(shard_dir)
    for split in ("train", "val", "test", "pool"):
        batches = list(reader.iter_batches(split, batch_size=3))  # crosses the 4-image shards
        ids = np.concatenate([b[0] for b in batches])
        images = np.concatenate([b[1] for b in batches])
        assert list(ids) == list(reader.ids(split))
        np.testing.assert_array_equal(images, reader.images(reader.positions(ids)))
        assert all(len(b[0]) == len(b[1]) <= 3 for b in batches)
    shuffled = np.random.default_rng(1).permutation(len(reader))
    ids = np.concatenate([b[0] for b in reader.iter_batches(shuffled, batch_size=5)])
    assert list(ids) == list(reader.manifest["id_str"].to_numpy()[shuffled])


def test_random_gather_matches_single_images(shard_dir):
    reader = ShardReader(shard_dir)
    positions = np.array([41, 0, 5, 5, 17, 3, 30, 29])  # across shards, repeated, unordered
    images = reader.images(positions)
    for position, image in zip(positions, images):
        np.testing.assert_array_equal(image, reader.image(reader.manifest["id_str"][position]))
    assert reader.images([]).shape == (0, 3, 32, 32)


def test_reader_pickles_without_open_memory_maps(shard_dir):
    reader = ShardReader(shard_dir)
    before = reader.images(np.arange(len(reader)))
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._arrays == {} and len(pickle.dumps(reader)) < 100_000
    np.testing.assert_array_equal(copy.images(np.arange(len(copy))), before)


def test_reader_in_dataloader_workers(shard_dir):
    torch = pytest.importorskip("torch")

    class Galaxies(torch.utils.data.Dataset):
        def __init__(self, reader):
            self.reader = reader

        def __len__(self):
            return len(self.reader)

        def __getitem__(self, position):
            return torch.from_numpy(self.reader.images([position])[0])

    reader = ShardReader(shard_dir)
    loader = torch.utils.data.DataLoader(Galaxies(reader), batch_size=8, num_workers=2)
    images = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(images, reader.images(np.arange(len(reader))))


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from zoobot.schema import SMOOTH_OR_FEATURED
    from zoobot.shards import write_shards

    catalog = pd.read_parquet(sys.argv[1])

    def progress(n_done, n_total):
        if n_done == 1:
            print("started", flush=True)
        time.sleep(0.01)  # slow enough to be killed mid-write

    write_shards(catalog, catalog.iloc[:0], sys.argv[2], SMOOTH_OR_FEATURED, val_size=4,
                 size=32, shard_size=8, progress=progress)
    print("finished", flush=True)
    """
)


def test_sigkill_mid_write_leaves_nothing_that_looks_complete(tmp_path, caplog):
    catalog = make_catalog(tmp_path / "images", 300)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    shard_dir = tmp_path / "shards"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "catalog.parquet"), str(shard_dir)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob(".shards.tmp-*/train/shard_00002.npy")):  # mid-write
            assert time.monotonic() < deadline and process.poll() is None, "the writer never got going"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not shard_dir.exists()
    (leftover,) = tmp_path.glob(".shards.tmp-*")
    with pytest.raises(ShardError, match="not a complete shard folder"):
        ShardReader(leftover)

    # a rerun is not blocked by the leftover, and warns about it
    write_shards(catalog, catalog.iloc[:0], shard_dir, SCHEMA, val_size=4, size=32, shard_size=8)
    assert len(ShardReader(shard_dir)) == 300
    assert any("unfinished shard folders" in r.message for r in caplog.records)


def write_experiment(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    write_catalog(labelled, tmp_path / "labelled.parquet", SCHEMA)
    write_catalog(unlabelled, tmp_path / "unlabelled.parquet", SCHEMA)
    return ["--labelled-catalog", str(tmp_path / "labelled.parquet"),
            "--unlabelled-catalog", str(tmp_path / "unlabelled.parquet")]


def test_cli_make_shards(tmp_path, catalogs):
    args = write_experiment(tmp_path, catalogs)
    runner = CliRunner()
    result = runner.invoke(
        app, ["make-shards", *args, "--val-size", "6", "--shard-dir", str(tmp_path / "shards"),
              "--size", "16", "--channels", "1", "--shard-size", "10", "--workers", "2", "--max-unlabelled", "5"],
    )
    assert result.exit_code == 0, result.output
    reader = ShardReader(tmp_path / "shards")
    assert reader.counts == {"train": 24, "val": 6, "test": 0, "pool": 5}
    assert reader.channels == 1 and reader.schema_spec == SCHEMA.name
    assert reader.config["sources"]["labelled_catalog"].endswith("labelled.parquet")
    assert runner.invoke(app, ["check-shards", "--shard-dir", str(tmp_path / "shards")]).exit_code == 0

    again = runner.invoke(app, ["make-shards", *args, "--val-size", "6", "--shard-dir", str(tmp_path / "shards")])
    assert again.exit_code == 1 and "not empty" in again.output


def test_cli_make_shards_crop_fraction(tmp_path, catalogs):
    args = write_experiment(tmp_path, catalogs)
    runner = CliRunner()
    base = ["make-shards", *args, "--eval-size", "6", "--size", "16"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "s"), "--crop-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    assert ShardReader(tmp_path / "s").config["crop_fraction"] == 0.5
    assert runner.invoke(app, ["check-shards", str(tmp_path / "s")]).exit_code == 0
    for bad in ("0", "1.2", "-0.3"):
        refused = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--crop-fraction", bad])
        assert refused.exit_code == 1 and "--crop-fraction" in refused.output and "expected" in refused.output
        assert "Traceback" not in refused.output and not (tmp_path / "bad").exists()


def test_predict_warns_when_the_catalog_crop_differs_from_training(tmp_path, catalogs, caplog):
    """`zoobot train --out RUN` records shard_dir in RUN/metrics.json beside RUN/checkpoints/."""
    write_shards(*catalogs, tmp_path / "shards", SCHEMA, val_size=6, size=16, crop_fraction=0.5)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"shard_dir": str(tmp_path / "shards")}))
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    with caplog.at_level(logging.WARNING):
        warn_if_crop_differs(checkpoint, 0.5)
        assert not caplog.records
        warn_if_crop_differs(checkpoint, 1.0)
        assert "--crop-fraction 0.5" in caplog.text
        caplog.clear()
        warn_if_crop_differs(tmp_path / "elsewhere" / "checkpoints" / "x.ckpt", 1.0)  # no record: no check
        assert not caplog.records
    with pytest.raises(ValueError, match="crop_fraction: expected"):
        warn_if_crop_differs(checkpoint, 0.0)


def test_cli_bad_image_and_skip_bad(tmp_path, catalogs):
    labelled, unlabelled = catalogs
    args = write_experiment(tmp_path, (break_images(labelled, tmp_path), unlabelled))
    runner = CliRunner()
    base = ["make-shards", *args, "--val-size", "6", "--size", "16"]
    failed = runner.invoke(app, [*base, "--shard-dir", str(tmp_path / "s1")])
    assert failed.exit_code == 1 and "lab0003" in failed.output and "--skip-bad" in failed.output
    assert not (tmp_path / "s1").exists()
    skipped = runner.invoke(app, [*base, "--shard-dir", str(tmp_path / "s2"), "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert len(pd.read_csv(tmp_path / "s2" / BAD_IMAGES_NAME)) == 2
    unknown = runner.invoke(app, [*base, "--shard-dir", str(tmp_path / "s3"), "--schema", "nope"])
    assert unknown.exit_code == 1 and "unknown schema" in unknown.output


@pytest.mark.realdata
def test_real_gz1_jpegs(tmp_path, shared_data):
    folder = shared_data / "gz1_sdss_6664"
    labels = pd.read_csv(folder / "labels.csv", dtype={"OBJID": str}).head(24)
    catalog = pd.DataFrame({
        "id_str": labels["OBJID"],
        "file_loc": [str(folder / f) for f in labels["image_file"]],
        VOTES[0]: (labels["CLASS"] == 0).astype(int),
        VOTES[1]: labels["CLASS"].isin([1, 2, 3]).astype(int),
    })
    write_shards(catalog, catalog.iloc[:0], tmp_path / "s", SCHEMA, val_size=4, size=64, shard_size=10)
    reader = ShardReader(tmp_path / "s")
    np.testing.assert_array_equal(reader.image(catalog["id_str"][5]), load_image(catalog["file_loc"][5], 64, 3))
