"""Classifier checkpoints: weights + config + metrics in one torch file, its sha256 in a JSON beside it."""

import json
from pathlib import Path
from typing import Callable

import torch

from classifier.model import ARCH, DigitCNN
from data.errors import InputError, prepare_output, refuse_existing
from data.files import check_finite, lock_output, read_payload, save_atomic, sha256_of, write_atomic

KIND = "digitgen-classifier"


def save(path: str | Path, model: DigitCNN, config: dict, metrics: dict) -> str:
    """Write `path` and `path`.json (config, metrics, sha256); returns the sha256."""
    path = Path(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    payload = {"kind": KIND, "arch": ARCH, "config": config, "metrics": metrics, "state_dict": state}
    digest = save_atomic(payload, path)
    sidecar = {"file": path.name, "sha256": digest, "arch": ARCH, "config": config, "metrics": metrics}
    write_atomic(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return digest


def check_writable(path: Path, overwrite: bool) -> None:
    """Before any training: a checkpoint path that can be written, and that replaces nothing (it or the sidecar
    `save` writes beside it) unless asked to."""
    if path.suffix not in (".pt", ".pth") and not path.is_dir():  # x.json would be its own sidecar
        raise InputError(f"{path}: name the checkpoint .pt (its sidecar, a .json, is written beside it)")
    prepare_output(path, overwrite)
    refuse_existing(path.with_suffix(".json"), overwrite)


def claim(path: Path, overwrite: bool) -> Callable[[], None]:
    """check_writable, then a lock on the sidecar until the returned release: a second run writing it (x.pt and
    x.pth share x.json) is refused, so that no run pairs its checkpoint with another's .json."""
    check_writable(path, overwrite)  # first: it makes the folder the lock file goes in
    release = lock_output(path.with_suffix(".json"))
    try:
        check_writable(path, overwrite)  # again, under the lock: a run that ended in between may have written it
    except BaseException:
        release()
        raise
    return release


def load(path: str | Path) -> tuple[DigitCNN, dict]:
    """The classifier (eval mode) and its payload; a checkpoint of another architecture is refused."""
    payload = read_payload(path, KIND)
    if payload.get("arch") != ARCH:
        raise InputError(f"{path}: classifier architecture {payload.get('arch')!r}, this tool builds {ARCH!r}")
    model = DigitCNN()
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    check_finite(path, payload["state_dict"])
    return model.to(memory_format=torch.channels_last).eval(), payload


REFERENCE = Path(__file__).parent / "weights" / "reference.pt"
REFERENCE_SHA256 = "74b769b3f0deefcbacc88812eb99f0311fe7d55f4ff11e96539732b9a2efb62b"


JUDGE = Path(__file__).parent / "weights" / "judge.pt"
JUDGE_SHA256 = "8948ffaf70643814930aa7e1d220ffbbd4bca99e443f0e81abddf226ac674588"


def _pinned(path: Path, digest: str, role: str) -> DigitCNN:
    if not path.is_file() or sha256_of(path) != digest:
        raise InputError(f"{path}: missing or not the pinned {role} (sha256 {digest[:16]}...); restore it from git")
    return load(path)[0]


def load_reference() -> DigitCNN:
    """The pinned reference classifier, whose features every quality metric is computed on. Its sha256
    is checked so that figures from different machines stay comparable."""
    return _pinned(REFERENCE, REFERENCE_SHA256, "reference classifier")


def load_judge() -> DigitCNN:
    """The pinned judge: a second classifier on all of MNIST train with another seed than the reference,
    never used to label anything, so its disagreement with a dataset's labels estimates their noise."""
    return _pinned(JUDGE, JUDGE_SHA256, "judge classifier")
