"""Run several experiments at once, each in its own `zoobot run` process, the cores split between them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoobot.cli.app import fail
from zoobot.loop.layout import completed_iterations


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )


def run_side_by_side(experiments: list[Path], total_iterations: int, parallel: int | None = None) -> None:
    """Bring every experiment to ``total_iterations`` complete iterations; resumes where each stopped.

    At most ``parallel`` processes run at once (default: one per core), each with an equal share
    of the cores as PyTorch threads: one thread per process on a 2-core machine ran about twice
    as fast as one process with two threads. Each process logs to EXPERIMENT.log (appended);
    a progress bar counts finished iterations. A failed run stops the others' queue and exits 1.
    """
    cores = os.cpu_count() or 1
    parallel = max(1, min(parallel or cores, len(experiments)))
    threads = max(1, cores // parallel)
    waiting = [e for e in experiments if len(completed_iterations(e)) < total_iterations]
    running: list[tuple[Path, object, subprocess.Popen]] = []
    failed: list[tuple[Path, int]] = []
    with progress_bar() as bar:
        tasks = {e: bar.add_task(f"{e.name} iterations", total=total_iterations) for e in experiments}
        while (waiting and not failed) or running:
            while waiting and not failed and len(running) < parallel:
                experiment = waiting.pop(0)
                remaining = total_iterations - len(completed_iterations(experiment))
                command = [sys.executable, "-c", "from zoobot.cli import main; main()", "--threads", str(threads),
                           "run", str(experiment), "--iterations", str(remaining)]
                log = open(experiment.with_suffix(".log"), "a")
                running.append((experiment, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
            for experiment, task in tasks.items():
                bar.update(task, completed=len(completed_iterations(experiment)))
            for item in [item for item in running if item[2].poll() is not None]:
                running.remove(item)
                item[1].close()
                if item[2].returncode != 0:
                    failed.append((item[0], item[2].returncode))
            time.sleep(0.5)
        for experiment, task in tasks.items():
            bar.update(task, completed=len(completed_iterations(experiment)))
    if failed:
        fail("; ".join(f"the {e.name} run failed (exit {code}); see {e.with_suffix('.log')}" for e, code in failed)
             + ". Rerun the same command to resume")
