"""Helpers every package needs, once: file digests, atomic saves, safe checkpoint reads, threads, device."""

import fcntl
import functools
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from data.errors import InputError


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write) -> None:
    """write(temporary path) under a temporary name beside `path`, then rename into place: a crash never
    leaves a half file under the final name."""
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, say: name the file the user asked for, not the temporary
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def save_atomic(payload: dict, path: Path) -> str:
    """torch.save, atomically; returns the file's sha256. Serialised in memory first: torch's own file writer
    meets a full disk with a RuntimeError, a Python write with the OSError that names it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
    return sha256_of(path)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files (.NAME.PID.tmp) of processes that were killed (SIGKILL leaves no time to clean up)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def lock_folder(folder: Path) -> int:
    """Hold an exclusive lock on a folder for the life of this process, so that a second process writing into
    it is refused instead of interleaving with the first; returns the descriptor that holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"{folder} is in use by another process: wait for it to end, or choose another folder") from None
    return fd


def lock_output(path: Path) -> Callable[[], None]:
    """Refuse a second process writing the same output file (a lock file beside it, held while it is written);
    returns the release, which removes the lock file."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"{path} is being written by another process: wait for it to end, or choose another output") from None
    except BaseException:  # Ctrl-C or SIGTERM while taking it: the lock file is ours, and goes
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise

    def release() -> None:
        lock.unlink(missing_ok=True)
        os.close(fd)
    return functools.cache(release)  # once, however many ways a writer ends


def read_payload(path: str | Path, kind: str) -> dict:
    """Load a checkpoint dict safely (weights_only: a checkpoint is data, never code) and check its kind."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'a folder, not a' if path.is_dir() else 'no such'} checkpoint")
    try:
        with warnings.catch_warnings():  # a damaged file makes torch warn before it fails: the error says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path}: is a {found!r} checkpoint, expected {kind!r}")
    _check_sidecar(path)
    return payload


def _check_sidecar(path: Path) -> None:
    """A checkpoint's .json records its sha256 when it was written: a file that no longer matches was changed
    or damaged since (or its run was killed between the two writes: resume it to write both again)."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return
    try:
        recorded = json.loads(sidecar.read_text()).get("sha256")
    except (ValueError, AttributeError, OSError):
        recorded = "unreadable"
    if recorded is not None and recorded != sha256_of(path):
        raise InputError(f"{path}: its sha256 does not match the one in {sidecar.name}: changed or damaged since written")


def check_finite(path: str | Path, state_dict: dict) -> None:
    """Weights with NaN or inf would draw or label garbage without another word: refuse them, and complex ones,
    which loading would cast to real with only a warning."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_complex():
            raise InputError(f"{path}: weight {name} holds complex numbers")
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{path}: weight {name} holds NaN or inf values")


def use_all_cores() -> int:
    """torch may default to fewer threads than the cores this process may use (shared with the other processes
    torchrun started on this machine)."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
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
    """A second seed drawn from a user's seed, still in range however large that one is. Seed s + 1 replays
    stream 0 of seed s as stream 1: fine for a few named streams (and saved runs resume by it), not for many."""
    return (seed + stream) % SEEDS


def indexed_seed(seed: int, index: int) -> int:
    """The seed of item `index` of a long seeded sequence (generate's batches): independent for every
    (seed, index), where derived_seed would make seed s + 1 the sequence of seed s shifted by one."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] % SEEDS)
