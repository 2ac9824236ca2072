"""Helpers every package needs, once: file digests, atomic saves, safe checkpoint reads, threads, device."""

import hashlib
import os
from pathlib import Path

import torch

from data.errors import InputError


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_atomic(payload: dict, path: Path) -> str:
    """torch.save under a temporary name, then rename into place; returns the file's sha256."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_of(path)


def read_payload(path: str | Path, kind: str) -> dict:
    """Load a checkpoint dict safely (weights_only: a checkpoint is data, never code) and check its kind."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path}: is a {found!r} checkpoint, expected {kind!r}")
    return payload


def use_all_cores() -> int:
    """torch may default to fewer threads than the cores this process may use."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") or (name == "cuda" and not torch.cuda.is_available()):
        raise InputError(f"device {name!r} is not available: choose auto, cpu or cuda (with a GPU)")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, where tensor cores make it fast; a no-op on the CPU, where fp32 is fast and exact."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


SEEDS = 2**63  # torch seeds are 64-bit; every seed a user gives is in 0..2^63-1


def check_seed(seed: int, name: str = "seed") -> None:
    if not 0 <= seed < SEEDS:
        raise InputError(f"{name} must be in 0..2^63-1, got {seed}")


def derived_seed(seed: int, stream: int) -> int:
    """A second seed drawn from a user's seed, still in range however large that one is."""
    return (seed + stream) % SEEDS
