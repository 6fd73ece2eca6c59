"""The loop's train step in a process group of its own, so Lightning's launcher can use every device.

Lightning's DDP launcher restarts the running command once per extra rank. Inside ``zoobot run``
that would restart the whole iteration; so when the train settings ask for more than one device
(or node), :func:`train_in_process_group` writes the step's inputs into ``job_dir`` and runs

    python -m zoobot.loop.train_process JOB_DIR

which calls ``training.train_model`` (and which the launcher restarts per rank). Rank 0 writes
``JOB_DIR/result.json``; the iteration reads it and goes on in its own process, so its resume
guarantees are those of the one-device path (the step's record is written only after training
ends).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from zoobot.files import write_json_atomic
from zoobot.schema import Schema, schema_from_dict, schema_to_dict
from zoobot.training_settings import TrainResult, TrainSettings

INPUTS, JOB, RESULT = "inputs.npz", "job.json", "result.json"


def needs_process_group(settings: TrainSettings) -> bool:
    """True when training would start more than one process: devices other than 1, or nodes > 1."""
    return str(settings.devices) not in ("1", "[0]") or int(settings.num_nodes) > 1


def train_in_process_group(
    shard_dir: Path,
    schema: Schema,
    train_ids,
    train_counts: np.ndarray,
    val_ids,
    val_counts: np.ndarray,
    settings: TrainSettings,
    save_dir: Path,
    job_dir: Path,
    warm_start: Path | None = None,
) -> TrainResult:
    """``train_model`` with the same arguments, run as ``python -m zoobot.loop.train_process``.

    RuntimeError with the end of the child's output when it fails.
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / RESULT).unlink(missing_ok=True)
    np.savez(
        job_dir / INPUTS, train_ids=np.asarray(train_ids, dtype=str), train_counts=np.asarray(train_counts),
        val_ids=np.asarray(val_ids, dtype=str), val_counts=np.asarray(val_counts),
    )
    write_json_atomic(job_dir / JOB, {
        "shard_dir": str(Path(shard_dir).resolve()), "schema": schema_to_dict(schema), "settings": asdict(settings),
        "save_dir": str(Path(save_dir).resolve()), "warm_start": str(warm_start) if warm_start else None,
    })
    done = subprocess.run([sys.executable, "-m", __name__, str(job_dir)], capture_output=True, text=True)
    if done.returncode != 0 or not (job_dir / RESULT).exists():
        raise RuntimeError(
            f"the train step's process group ({settings.devices} devices, strategy {settings.strategy!r}) failed "
            f"with status {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
        )
    record = json.loads((job_dir / RESULT).read_text())
    record.pop("world_size")
    record["best_checkpoint"] = Path(record["best_checkpoint"])
    return TrainResult(**record)


def main(job_dir: str) -> None:
    from zoobot.training import train_model

    job_dir = Path(job_dir)
    job = json.loads((job_dir / JOB).read_text())
    inputs = np.load(job_dir / INPUTS)
    result = train_model(
        job["shard_dir"], schema_from_dict(job["schema"]), list(inputs["train_ids"]), inputs["train_counts"],
        list(inputs["val_ids"]), inputs["val_counts"], TrainSettings(**job["settings"]), Path(job["save_dir"]),
        warm_start=Path(job["warm_start"]) if job["warm_start"] else None,
    )
    import torch.distributed as dist
    from lightning.pytorch.utilities import rank_zero_only

    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank_zero_only.rank == 0:  # set by Lightning in every rank's process
        record = {**asdict(result), "best_checkpoint": str(result.best_checkpoint), "world_size": world_size}
        write_json_atomic(job_dir / RESULT, record)


if __name__ == "__main__":
    main(sys.argv[1])
