"""Several processes, one code path: ``torchrun`` starts them, ``torch.distributed`` links them.

A command run by ``torchrun --nproc-per-node N -m bench ...`` finds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in its environment and joins the process group (gloo on the CPU, nccl on CUDA, one
GPU per local rank); a command run plainly is a world of one, where every function here is a
no-op or the identity. Work is split by batch: batch ``b`` of a stream belongs to rank
``b % world size``, so every batch holds the same images as in a single process (bit-identical
results on the same device) and no image is done twice.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from bench.errors import ConfigError

T = TypeVar("T")


def launched() -> bool:
    """True in a process that ``torchrun`` started with more than one process in the world."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; the device this process works on
    (``cuda`` becomes ``cuda:<LOCAL_RANK>``: one GPU per process)."""
    if not launched():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.index is not None and device.index != local:
            raise ConfigError(
                f"--device {device} under torchrun: each process takes the GPU of its local "
                f"rank ({local} here); pass --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # torchrun stops every process when one fails, so the timeout only catches hangs; it is
        # long because the online vote's sets are built by rank 0 alone while the others wait
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(hours=48))
    return device


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0


def batch_spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, stop) of each batch of a stream of ``n`` items, the last one ragged."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def mine(batches: Sequence[T]) -> list[T]:
    """The batches of a stream that this rank works on (batch b: rank b % world size)."""
    return list(batches[rank() :: size()])


def barrier() -> None:
    if size() > 1:
        torch_dist.barrier()


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if size() == 1:
        return [obj]
    gathered: list[Any] = [None] * size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if size() == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def per_rank_batch(global_batch: int, key: str) -> int:
    """The batch each rank trains on: the config's batch size is the global batch."""
    if global_batch % size():
        raise ConfigError(
            f"{key} = {global_batch} does not divide among {size()} processes; make it a "
            f"multiple of {size()} (it is the global batch size)"
        )
    return global_batch // size()


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
