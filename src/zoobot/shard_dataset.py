"""Training data over one shard folder: galaxies with caller-given votes, batched and augmented.

:class:`ShardVoteDataset` reads whole batches of uint8 images from the memory-mapped shards;
:class:`ShardDataModule` serves its training (augmented, shuffled) and validation loaders to
Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoobot.augmentation import GalaxyAugmentation
from zoobot.shards import ProcessLocalReader, ShardReader
from zoobot.transforms import to_greyscale


class ShardVoteDataset(Dataset):
    """Galaxies at given shard positions, with caller-given vote counts.

    Supports batched fetching (``__getitems__``): a DataLoader reads a whole batch of images
    from the shards in one call and augments it as a batch. The caller's ShardReader is used in
    its own process; workers and spawned ranks reopen the folder (memory maps are not pickled).
    """

    def __init__(
        self,
        shards: ShardReader,
        positions: np.ndarray,
        counts: np.ndarray,
        augmentation: GalaxyAugmentation | None = None,
        greyscale: bool = False,
    ):
        self._shards = ProcessLocalReader(shards)
        self.positions = np.asarray(positions)
        self.counts = torch.as_tensor(np.asarray(counts), dtype=torch.int64)  # (galaxy, answer)
        self.augmentation = augmentation
        self.greyscale = greyscale

    @property
    def reader(self) -> ShardReader:
        return self._shards.get()

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices)
        images = torch.as_tensor(np.ascontiguousarray(self.reader.images(self.positions[indices])))
        if self.greyscale and images.shape[1] == 3:
            images = to_greyscale(images)
        if self.augmentation is not None:
            images = self.augmentation(images)
        return images, self.counts[torch.from_numpy(indices)]  # (batch, C, H, W) uint8, (batch, answer)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, counts = self.__getitems__([index])
        return images[0], counts[0]


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset already returns a stacked batch; pass it through."""
    return batch


class ShardDataModule(L.LightningDataModule):
    """Training (augmented, shuffled) and validation (plain) loaders over one shard folder."""

    def __init__(
        self,
        train: ShardVoteDataset,
        val: ShardVoteDataset,
        batch_size: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, dataset: ShardVoteDataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = math.ceil(len(self.train_set) / world_size)
        # A last batch of one galaxy breaks batch norm on a 1x1 feature map; drop ragged
        # batches when every rank still gets at least one full batch.
        return self._loader(self.train_set, shuffle=True, drop_last=per_rank >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, drop_last=False)
