"""Work split over the processes of a `torchrun` launch: who am I, my share of a list, results merged everywhere.

Every heavy loop goes through `rounds`: item i is computed by rank i % world, and after each round of `world`
items every rank receives all of that round's results in item order, so all ranks hold the same merged result
and the loop body (batch composition, summation order) is the same as in one process. A loop nested inside
another's work runs locally: the outermost split wins. Sums of tensors are all-reduced on the device the
backend needs (NCCL: the rank's GPU; gloo: the CPU) and come back where they were. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")

_nested = 0  # > 0 while this process computes an item of `rounds`: inner loops do not split again


def init() -> None:
    """Join the process group when started by torchrun (NCCL on GPUs, gloo on CPUs); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints results (rank 0)."""
    return rank_world()[0] == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def default_device() -> str:
    """This process's GPU (`cuda:LOCAL_RANK`) when CUDA is available, else "cpu"."""
    if torch.cuda.is_available():
        return f"cuda:{local_rank() % torch.cuda.device_count()}"
    return "cpu"


def rank_gpus() -> list[int]:
    """The GPUs of this node that belong to this process when each rank spreads its model over several
    (`device_map` auto/balanced/sequential under torchrun): an equal, disjoint block per local rank."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    per_rank = n // max(per_node, 1)
    if per_rank == 0:
        return []
    return list(range(local_rank() * per_rank, (local_rank() + 1) * per_rank))


def shard(items: Sequence[T]) -> list[T]:
    """This rank's items: every world-th, starting at its rank."""
    rank, world = _active()
    return list(items[rank::world])


def _active() -> tuple[int, int]:
    """(rank, world) for splitting work here: (0, 1) inside an item of an enclosing `rounds`."""
    return (0, 1) if _nested else rank_world()


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Inside this block, loops run whole in this process (they do not split or exchange results)."""
    global _nested
    _nested += 1
    try:
        yield
    finally:
        _nested -= 1


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (one element outside a process group)."""
    world = _active()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def rounds(items: Sequence[T], fn: Callable[[T], R]) -> Iterator[list[tuple[T, R]]]:
    """Compute `fn(item)` for all items, split over ranks; yield each round's (item, result) pairs in item order.

    Every rank must call this with the same items. A round holds `world` items (the last may hold fewer); each
    rank computes one of them and all ranks receive all of them, so a caller can save progress per round.
    """
    rank, world = _active()
    if world == 1:
        for item in items:
            with local():
                result = fn(item)
            yield [(item, result)]
        return
    for start in range(0, len(items), world):
        mine = start + rank
        computed: R | None = None  # stays None on a rank without an item in the last round
        if mine < len(items):
            with local():
                computed = fn(items[mine])
        results = gather(computed)
        yield [(items[start + r], results[r]) for r in range(min(world, len(items) - start))]


def map_items(items: Sequence[T], fn: Callable[[T], R]) -> list[R]:
    """`[fn(item) for item in items]`, split over ranks; every rank returns the whole list."""
    return [result for batch in rounds(items, fn) for _, result in batch]


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor over ranks, in place. NCCL needs the tensors on the rank's GPU and gloo on the CPU: they
    are moved there for the reduction and the sums copied back to where each tensor was."""
    if _active()[1] == 1:
        return
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    for t in tensors:
        if t.device == device:
            dist.all_reduce(t)
        else:
            moved = t.to(device)
            dist.all_reduce(moved)
            t.copy_(moved)


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if _active()[1] > 1:
        dist.barrier()
