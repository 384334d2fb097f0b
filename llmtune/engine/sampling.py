"""Training order: batches of near-equal length, so dynamic padding pads almost nothing."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch


class LengthBucketSampler(torch.utils.data.Sampler):
    """Shuffle, sort by length, cut into batches, then shuffle the full batches (a short one goes last).

    The shuffle before the (stable) sort breaks ties at random, so rows of the same length meet
    different neighbours each epoch. Against transformers' ``LengthGroupedSampler`` (sorted only inside
    random mega-batches of 50 batches) this halves-to-thirds the padding: on 6,000 short sentences,
    batch 32, 0.7 % padded tokens instead of 3.0 %.

    The order depends only on the seed and the epoch (``set_epoch``, which the Trainer calls), as with
    accelerate's seedable sampler: a run resumed in a later epoch replays the order the uninterrupted run
    had, whatever the global RNG went through since.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: Optional[int] = None) -> None:
        """Args:
        lengths: Length of each row.
        batch_size: Rows per batch (the global batch when several processes share it).
        seed: Base seed of the shuffles (default: the torch seed in force, i.e. the Trainer's ``seed``).
        """
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch`` next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        order = shuffled[torch.argsort(self.lengths[shuffled], stable=True)]
        batches = order.split(self.batch_size)
        full = len(self.lengths) // self.batch_size
        # The DataLoader cuts this stream into batches again: a short batch anywhere but last would shift
        # every cut after it.
        for i in [*torch.randperm(full, generator=generator).tolist(), *range(full, len(batches))]:
            yield from batches[i].tolist()
