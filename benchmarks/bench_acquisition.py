"""Benchmark acquisition scoring and streaming selection; prints markdown tables.

    .venv/bin/python benchmarks/bench_acquisition.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_acquisition.py --quick    # smaller sizes

Each streaming case runs in its own process, so its peak RSS (resource.getrusage) is its own.
Synthetic predictions: per-galaxy mean fractions from a flat Dirichlet, total concentration
5-60, and per-sample log-normal jitter (sd 0.2), as MC dropout gives.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from zoobot import acquisition as acq
from zoobot.schema import DECALS_DR5

N_SAMPLES = 15
EXPECTED_VOTES = 40


def synthetic_alpha(rng, n_galaxies, groups, n_samples=N_SAMPLES):
    parts = []
    for start, stop in groups:
        fractions = rng.dirichlet(np.ones(stop - start), size=(n_galaxies, 1))
        total = rng.uniform(5, 60, size=(n_galaxies, 1, 1))
        parts.append(fractions * total * np.exp(rng.normal(0, 0.2, size=(n_galaxies, n_samples, stop - start))))
    return np.concatenate(parts, axis=2)


def best_of(fn, repeats=3):
    """Best (wall seconds, CPU seconds of this process) over repeats.

    CPU seconds are the steadier number on a shared machine; wall seconds include waiting.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_scoring(quick: bool) -> None:
    rng = np.random.default_rng(0)
    print("## Scoring (15 dropout samples, N = 40 expected votes)\n")
    print("| case | galaxies | wall s | CPU s | scores/s (wall) | scores/CPU s |")
    print("|---|---:|---:|---:|---:|---:|")

    def row(label, n_galaxies, seconds):
        wall, cpu = seconds
        print(f"| {label} | {n_galaxies:,} | {wall:.3f} | {cpu:.3f} | {n_galaxies / wall:,.0f} | {n_galaxies / cpu:,.0f} |")

    n = 20_000 if quick else 100_000
    rho = rng.beta(2, 2, size=(n, N_SAMPLES))
    row("binomial BALD", n, best_of(lambda: acq.binomial_bald(rho, EXPECTED_VOTES)))

    n = 100 if quick else 400
    alpha = synthetic_alpha(rng, n, DECALS_DR5.answer_groups)
    acq.dirichlet_bald(alpha[:2], DECALS_DR5)  # build the cached outcome tables once
    for label, options in [
        ("Dirichlet BALD, DECaLS DR5 (defaults)", {}),
        ("Dirichlet BALD, DECaLS DR5 (max_outcomes=1000)", {"max_outcomes": 1000}),
        ("Dirichlet BALD, DECaLS DR5 (draws_per_sample=32)", {"draws_per_sample": 32}),
    ]:
        row(label, n, best_of(lambda: acq.dirichlet_bald(alpha, DECALS_DR5, EXPECTED_VOTES, rng=0, **options), 2))
    row(
        "Dirichlet predictive entropy, DECaLS DR5",
        n,
        best_of(lambda: acq.dirichlet_predictive_entropy(alpha, DECALS_DR5, EXPECTED_VOTES, rng=0), 2),
    )

    print("\n### Per question, DECaLS DR5 (defaults)\n")
    print("| question | answers | vote outcomes | method | CPU ms/galaxy |")
    print("|---|---:|---:|---|---:|")
    for question, (start, stop) in zip(DECALS_DR5.questions, DECALS_DR5.answer_groups):
        outcomes = acq.n_vote_outcomes(stop - start, EXPECTED_VOTES)
        method = "exact" if outcomes <= acq.MAX_EXACT_OUTCOMES else "Monte Carlo"
        _, cpu = best_of(lambda: acq.question_entropies(alpha[..., start:stop], EXPECTED_VOTES, rng=0), 2)
        print(f"| {question.name} | {stop - start} | {outcomes:,} | {method} | {1e3 * cpu / n:.2f} |")


def bench_estimator(quick: bool) -> None:
    """Monte Carlo against exact enumeration where both are possible: 4 answers, 40 votes."""
    rng = np.random.default_rng(1)
    n = 50 if quick else 200
    alpha = synthetic_alpha(rng, n, [(0, 4)])
    _, exact_seconds = best_of(lambda: acq.question_entropies(alpha, EXPECTED_VOTES), 1)
    exact = np.subtract(*acq.question_entropies(alpha, EXPECTED_VOTES))
    print("\n## Monte Carlo estimator vs enumeration (4 answers, N = 40: 12,341 outcomes)\n")
    print(f"Exact: {1e3 * exact_seconds / n:.2f} CPU ms/galaxy; MI mean {exact.mean():.3f}, sd across galaxies {exact.std():.3f} nats.\n")
    print("| draws per sample | CPU ms/galaxy | mean abs error | max abs error | rank correlation |")
    print("|---:|---:|---:|---:|---:|")
    for draws in (8, 16, 32, 64, 128, 256):
        _, seconds = best_of(
            lambda: acq.question_entropies(alpha, EXPECTED_VOTES, rng=0, max_outcomes=0, draws_per_sample=draws), 1
        )
        sampled = np.subtract(
            *acq.question_entropies(alpha, EXPECTED_VOTES, rng=0, max_outcomes=0, draws_per_sample=draws)
        )
        error = np.abs(sampled - exact)
        rank = np.corrcoef(np.argsort(np.argsort(sampled)), np.argsort(np.argsort(exact)))[0, 1]
        print(f"| {draws} | {1e3 * seconds / n:.2f} | {error.mean():.4f} | {error.max():.4f} | {rank:.4f} |")


def stream(n_galaxies: int, chunk: int, k: int, strategy: str) -> dict:
    """Offer n_galaxies synthetic (id, score) pairs chunk by chunk; the pool never exists whole."""
    rng = np.random.default_rng(2)
    baseline = peak_rss_mib()
    exclude = [f"J{i:09d}" for i in range(0, n_galaxies, 100)]  # 1% already labelled
    selector = acq.TopK(k, strategy=strategy, seed=0 if strategy != "top-k" else None, exclude=exclude)
    wall = cpu = 0.0  # time in TopK.update only, not in making the synthetic chunks
    for first in range(0, n_galaxies, chunk):
        ids = np.char.add("J", np.char.zfill(np.arange(first, min(first + chunk, n_galaxies)).astype(str), 9))
        scores = rng.uniform(size=len(ids))
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        selector.update(ids, scores)
        wall += time.perf_counter() - wall_start
        cpu += time.process_time() - cpu_start
    return {
        "n": n_galaxies, "chunk": chunk, "k": k, "strategy": strategy, "seconds": wall, "cpu": cpu,
        "baseline_mib": baseline, "peak_mib": peak_rss_mib(), "selected": len(selector.result()),
    }


def bench_streaming(quick: bool) -> None:
    sizes = (100_000, 1_000_000) if not quick else (10_000, 100_000)
    print("\n## Streaming TopK (chunks of 10,000; 1% of ids excluded; each case in its own process)\n")
    print("| galaxies | k | strategy | wall s | CPU s | galaxies/CPU s | RSS after imports MiB | peak RSS MiB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for n_galaxies in sizes:
        for strategy in ("top-k", "power"):
            command = [sys.executable, __file__, "--stream", json.dumps([n_galaxies, 10_000, 1000, strategy])]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            print(
                f"| {result['n']:,} | {result['k']} | {strategy} | {result['seconds']:.2f} | {result['cpu']:.2f} | "
                f"{result['n'] / result['cpu']:,.0f} | {result['baseline_mib']:.0f} | {result['peak_mib']:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--stream", help=argparse.SUPPRESS)  # internal: one streaming case, JSON out
    args = parser.parse_args()
    if args.stream:
        print(json.dumps(stream(*json.loads(args.stream))))
        return
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    bench_scoring(args.quick)
    bench_estimator(args.quick)
    bench_streaming(args.quick)


if __name__ == "__main__":
    main()
