"""Contrastive learning pieces (SimCLR, Chen et al. 2020): the NT-Xent loss and a projection head.

    z1, z2 = projection(features(view1)), projection(features(view2))   # (batch, dim) each
    loss = nt_xent(z1, z2, temperature=0.1)

NT-Xent: the 2B projections are L2-normalised; s_ij = z_i . z_j / temperature. For each view i
its positive p(i) is the other view of the same galaxy and the other 2B - 2 views are negatives:

    loss = mean_i [ -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) ) ]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean NT-Xent loss of two views (batch, dim) of the same galaxies, row i with row i; a scalar."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent: expected two (batch, dim) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError(f"nt_xent: expected a batch of at least 2 galaxies (others are the negatives), got {len(z1)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: expected temperature > 0, got {temperature!r}")
    batch = len(z1)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, dim)
    similarity = z @ z.T / temperature  # (2B, 2B)
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own negative
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)  # (2B,)
    return F.cross_entropy(similarity, positives)


class ProjectionHead(nn.Module):
    """SimCLR's projection g: features (batch, n_features) -> (batch, dim), Linear-ReLU-Linear.

    Used only while pretraining; the representation kept is the backbone's pooled features.
    """

    def __init__(self, n_features: int, dim: int = 64, hidden: int | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"projection dim: expected an int >= 1, got {dim!r}")
        hidden = hidden or n_features
        self.layers = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
