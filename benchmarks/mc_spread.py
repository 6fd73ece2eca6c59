"""What head-only MC dropout's spread says beyond the mean prediction, and which galaxies BALD picks.

For each checkpoint, predicts a split with T MC samples and prints, for a binomial model:
- the rank correlation between |mean logit| and the standard deviation of the logit over samples
  (close to 1: the spread is a function of the mean, so it adds little information);
- the rank correlation between the BALD score and |p - 0.5| (negative: BALD prefers ambiguous
  galaxies overall);
- |p - 0.5| and the spread of rho among the top-k BALD galaxies against the whole split.

    PYTHONPATH=src python benchmarks/mc_spread.py /tmp/gz1/shards48 \
        /tmp/gz1/cmp2/bald_seed42/iterations/iteration_002 /tmp/gz1/cmp2/bald_seed42/iterations/iteration_004
    PYTHONPATH=src python benchmarks/mc_spread.py /tmp/gz1/shards48 --ensemble --n-samples 10 \
        /tmp/gz1/cmp2/random_seed4{2,3,4}/iterations/iteration_001
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from zoobot.acquisition import get_acquisition
from zoobot.checkpoints import load_model
from zoobot.predict import predict_all
from zoobot.shards import ShardReader


def checkpoint_of(path: Path) -> Path:
    """A .ckpt, or the checkpoint an iteration folder's train_result.json names."""
    if path.is_dir():
        return path / json.loads((path / "train_result.json").read_text())["checkpoint"]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints or loop iteration folders")
    parser.add_argument("--split", default="pool")
    parser.add_argument("--n-samples", type=int, default=30)
    parser.add_argument("--expected-votes", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--ensemble", action="store_true",
                        help="treat the checkpoints as members of one ensemble (trained on the same galaxies) and "
                        "compare their disagreement with each member's dropout spread")
    args = parser.parse_args()
    reader = ShardReader(args.shards)
    if args.ensemble:
        ensemble(reader, args)
        return
    for path in args.checkpoints:
        torch.manual_seed(0)
        model = load_model(checkpoint_of(path))
        if model.n_outputs != 1:
            raise SystemExit(f"{path}: expected a binomial model (one question, two answers), got {model.n_outputs} outputs")
        _, predictions = predict_all(model, reader, split=args.split, n_samples=args.n_samples)  # (galaxy, sample, 1)
        rho = predictions[..., 0].astype(np.float64).clip(1e-6, 1 - 1e-6)  # (galaxy, sample)
        logit = np.log(rho / (1 - rho))
        p = rho.mean(axis=1)
        bald = get_acquisition("bald")(predictions, model.schema, args.expected_votes)  # (galaxy,)
        top = np.argsort(-bald)[: args.top_k]
        print(
            f"{path}: {len(p)} galaxies; spearman(|logit mean|, logit sd) "
            f"{stats.spearmanr(np.abs(logit.mean(1)), logit.std(1))[0]:+.2f}; "
            f"spearman(BALD, |p - 0.5|) {stats.spearmanr(bald, np.abs(p - 0.5))[0]:+.2f}; "
            f"|p - 0.5|: top-{args.top_k} BALD {np.abs(p[top] - 0.5).mean():.3f}, all {np.abs(p - 0.5).mean():.3f}; "
            f"sd of rho: top {rho[top].std(1).mean():.3f}, all {rho.std(1).mean():.3f}"
        )


def ensemble(reader: ShardReader, args) -> None:
    """Spread across members' mean predictions against the dropout spread within each member."""
    means, within = [], []
    for path in args.checkpoints:
        torch.manual_seed(0)
        _, predictions = predict_all(load_model(checkpoint_of(path)), reader, split=args.split, n_samples=args.n_samples)
        rho = predictions[..., 0].astype(np.float64).clip(1e-6, 1 - 1e-6)  # (galaxy, sample)
        means.append(rho.mean(axis=1))
        within.append(rho.std(axis=1).mean())
    means = np.stack(means, axis=1)  # (galaxy, member)
    logit = np.log(means / (1 - means))
    print(
        f"{len(args.checkpoints)} members, {len(means)} galaxies: sd of rho across members {means.std(1).mean():.3f}, "
        f"within a member (dropout) {np.mean(within):.3f}; spearman(|mean logit|, sd of member logits) "
        f"{stats.spearmanr(np.abs(logit.mean(1)), logit.std(1))[0]:+.2f}"
    )


if __name__ == "__main__":
    main()
