"""GAN checkpoints: the full training state (resumable), and the slim generator that `generate` reads."""

import json
from pathlib import Path

from augment.models import GanSpec, Generator
from data.files import check_finite, read_payload, save_atomic, write_atomic
from data.mnist import DEFAULT_DIRS as DATASETS
from data.errors import InputError

TRAINING_KIND, GENERATOR_KIND = "digitgen-gan-training", "digitgen-generator"
BUNDLED = Path(__file__).parent / "weights" / "generator.pt"  # see weights/README.md for how they were made
BUNDLED_CONDITIONAL = BUNDLED.with_name("generator-conditional.pt")  # asked for classes: balancing rejects nothing


def save_training(path: Path, state: dict) -> str:
    return save_atomic({"kind": TRAINING_KIND, **state}, path)


def load_training(path: Path) -> dict:
    return read_payload(path, TRAINING_KIND)


def save_generator(path: Path, spec: GanSpec, state_dict: dict, info: dict) -> str:
    """The generator alone (EMA weights when training kept them), with a .json beside it giving its sha256."""
    digest = save_atomic({"kind": GENERATOR_KIND, "spec": spec.as_dict(), "state_dict": state_dict, "info": info}, path)
    sidecar = {"file": path.name, "sha256": digest, "spec": spec.as_dict(), **info}
    write_atomic(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return digest


def load_generator(path: str | Path) -> tuple[Generator, dict]:
    """The generator in eval mode and its payload; refuses other kinds and mismatched weights."""
    payload = read_payload(path, GENERATOR_KIND)
    if isinstance(payload.get("state_dict"), dict):  # before loading, which would cast complex weights to real
        check_finite(path, payload["state_dict"])
    try:
        g = Generator(GanSpec(**payload["spec"]))
        g.load_state_dict(payload["state_dict"])
        g.check_prior()
        dataset = payload["info"]["run"]["dataset"]
    except (TypeError, KeyError, RuntimeError, ValueError, InputError) as e:
        raise InputError(f"{path}: weights do not fit the generator they describe ({str(e).splitlines()[0]})") from None
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise InputError(f"{path}: trained on unknown dataset {dataset!r}")
    return g.eval(), payload
