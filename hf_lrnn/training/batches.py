"""A deterministic, resumable stream of training batches, sharded over processes.

Micro-batch k (counted from the start of training, over epochs) is a pure function of (k, seed, dataset
size, batch size, world size, rank): epoch e = k // batches_per_epoch shuffles the dataset with a generator
seeded by (seed, e), and the k-th global batch of `world_size * batch_size` examples is cut into one slice per
process. So a run resumed at step s reads exactly the batches the uninterrupted run would have read, every
process reads different examples, and no state beyond the step number needs to be saved.

The rows are held as two [num_examples, T] tensors on `device` (a synthetic task is a few MB), three when the
dataset has a `position_ids` column (language modelling with packing="varlen": positions that restart at 0 at
every document, which the model reads as document boundaries): taking a batch is one index operation per column,
so the data never holds a GPU back. The column does not change which examples a batch holds.
"""

import torch


class ShardedBatches:
    def __init__(self, dataset, batch_size: int, seed: int, world_size: int = 1, rank: int = 0, device=None):
        """dataset: a `datasets.Dataset` with equal-length `input_ids` / `labels` (and `position_ids`) rows."""
        global_batch = batch_size * world_size
        if len(dataset) < global_batch:
            raise ValueError(
                f"the training set has {len(dataset)} examples, fewer than one global batch "
                f"(per_device_train_batch_size={batch_size} x {world_size} processes = {global_batch})"
            )
        columns = ["input_ids", "labels"] + (["position_ids"] if "position_ids" in dataset.column_names else [])
        rows = dataset.with_format("torch", columns=columns)[:]
        self.input_ids = rows["input_ids"].to(device)  # [num_examples, T]
        self.labels = rows["labels"].to(device)
        self.position_ids = rows["position_ids"].to(device) if "position_ids" in rows else None  # [num_examples, T]
        self.num_examples = len(dataset)
        self.batch_size = batch_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.batches_per_epoch = len(dataset) // global_batch  # the incomplete last batch is dropped
        self._epoch = None
        self._order = None

    def order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        return self._order

    def indices(self, k: int) -> torch.Tensor:
        """Example indices of this process's part of micro-batch k."""
        epoch, position = divmod(k, self.batches_per_epoch)
        start = (position * self.world_size + self.rank) * self.batch_size
        return self.order(epoch)[start : start + self.batch_size]

    def batch(self, k: int) -> dict:
        """{"input_ids": [b, T], "labels": [b, T]} (long tensors on `device`) of micro-batch k, and "position_ids"
        [b, T] when the dataset has that column."""
        index = self.indices(k).to(self.input_ids.device)
        batch = {"input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.position_ids is not None:
            batch["position_ids"] = self.position_ids[index]
        return batch
