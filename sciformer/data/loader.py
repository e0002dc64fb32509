"""A DataLoader that Lightning can resume mid-epoch, and that shards itself across DDP ranks.

The order of epoch ``e`` is a permutation drawn from ``seed + e``; the loader's state is (epoch, batches
consumed). Lightning stores that state in its checkpoints (it treats any loader with ``state_dict`` and
``load_state_dict`` as resumable), so a run killed mid-epoch continues with exactly the batches it would
have seen. Lightning does not prefetch from sized loaders, so "yielded" equals "consumed".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from sciformer.errors import DataError


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutation (or identity), split evenly across ranks (padding by wrap-around).

    ``groups``: sizes of consecutive index blocks (a mixture's stores); when given with shuffling, each epoch
    draws every non-empty block equally often (data-set-balanced sampling) while keeping the epoch length
    ``n``: a small block's items repeat (each ⌊q/m⌋ or ⌈q/m⌉ times), a large block's are subsampled without
    repetition. One non-empty block draws exactly the unbalanced permutation.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, groups: Sequence[int] | None = None):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.groups = None if groups is None else [int(m) for m in groups]
        if self.groups is not None:
            if not shuffle:
                raise DataError("balanced sampling (groups) draws at random: it needs shuffle=True")
            if sum(self.groups) != n or any(m < 0 for m in self.groups):
                raise DataError(f"groups {self.groups} must be non-negative sizes summing to the {n} items")
        self.epoch = 0
        self.skip = 0  # samples of this epoch already consumed (set when resuming)

    def _balanced(self, g: torch.Generator) -> list[int]:
        """Equal quotas per non-empty block (the remainder to blocks drawn at random), then one shuffle."""
        starts = [0]
        for m in self.groups:
            starts.append(starts[-1] + m)
        live = [k for k, m in enumerate(self.groups) if m > 0]
        quota = [self.n // len(live)] * len(live)
        for k in torch.randperm(len(live), generator=g)[: self.n % len(live)].tolist():
            quota[k] += 1
        drawn = []
        for k, q in zip(live, quota):
            m = self.groups[k]
            cycles = [torch.randperm(m, generator=g) for _ in range(-(-q // m))]
            drawn.append(torch.cat(cycles)[:q] + starts[k])
        drawn = torch.cat(drawn)
        return drawn[torch.randperm(self.n, generator=g)].tolist()

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            if self.groups is not None and sum(m > 0 for m in self.groups) > 1:
                order = self._balanced(g)
            else:
                order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        rank, world = _rank_world()
        per_rank = -(-self.n // world)
        total = per_rank * world
        order = (order * (total // max(self.n, 1) + 1))[:total]
        return order[rank::world]

    def __iter__(self):
        yield from self.indices()[self.skip :]

    def __len__(self) -> int:  # the full epoch: Lightning counts resumed batches itself
        return -(-self.n // _rank_world()[1])


class ResumableLoader(DataLoader):
    """``DataLoader`` over an :class:`EpochSampler` whose position survives a checkpoint (``groups``: see
    :class:`EpochSampler`)."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 groups: Sequence[int] | None = None, **kwargs):
        self.epoch_sampler = EpochSampler(len(dataset), shuffle, seed, groups)
        kwargs.setdefault("persistent_workers", kwargs.get("num_workers", 0) > 0)
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed run's
        # dropout masks would differ from an uninterrupted run's
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, sampler=self.epoch_sampler, **kwargs)
        self._consumed = 0  # batches of the current epoch handed out

    def __iter__(self):
        s = self.epoch_sampler
        self._consumed = s.skip // self.batch_size if self.batch_size else 0
        for batch in super().__iter__():
            self._consumed += 1
            yield batch
        s.epoch, s.skip, self._consumed = s.epoch + 1, 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch_sampler.epoch, "consumed_batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch_sampler.epoch = int(state["epoch"])
        self.epoch_sampler.skip = int(state["consumed_batches"]) * (self.batch_size or 1)
