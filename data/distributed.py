"""The processes torchrun starts: which one this is, and the few collective steps they share. A plain run is
process 0 of 1, and every function here is then a no-op."""

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from data.errors import InputError

_alone = False  # see alone()


@contextmanager
def alone():
    """Inside, this process works on its own, whatever group it belongs to: a sweep's processes each train their
    own GANs and draw their own samples."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def _grouped() -> bool:
    return dist.is_initialized() and not _alone


def join(device: torch.device) -> None:
    """Join the group torchrun describes in the environment: NCCL between GPUs, gloo between CPU processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized() and not _alone:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise InputError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
                             f"several processes with torchrun, or unset WORLD_SIZE")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def leave() -> None:
    if _grouped():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if _grouped() else 0


def world() -> int:
    return dist.get_world_size() if _grouped() else 1


def largest(values: list[int], device: torch.device) -> list[int]:
    """Each value's largest over the processes: how they agree to stop at the same step (a signal, a time
    budget or a divergence seen by any one of them)."""
    if world() == 1:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gathered(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every process's tensor (all the same shape), in process order."""
    if world() == 1:
        return [t]
    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def agreed(problem: str | None) -> str | None:
    """The first process's problem, if any process has one: all stop together with the same error (a process
    left waiting for the others would fail with a traceback instead)."""
    if world() == 1:
        return problem
    problems = [None] * world()
    dist.all_gather_object(problems, problem)
    return next((p for p in problems if p), None)


def barrier() -> None:
    if world() > 1:
        dist.barrier()
