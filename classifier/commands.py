"""The classifier side's command as one library function: what `digitgen classify` prints, a notebook calls."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from classifier import checkpoint, mixing
from classifier.train import TrainConfig, fit, predict_proba
from data import mnist
from data.files import use_all_cores


@dataclass(frozen=True)
class Classified:
    path: Path
    sha256: str
    accuracy: float  # on the real test set
    errors: int
    test_size: int
    n_real: int
    n_synthetic: int
    threads: int
    history: list[dict]  # step, seconds, images_per_s, val_accuracy (with a validation split): per epoch for classify
    confusion: np.ndarray  # (10, 10): row = true digit, column = predicted

    @property
    def per_class(self) -> np.ndarray:
        """Accuracy on each digit's test images: which digits a change of training data helps or hurts."""
        return self.confusion.diagonal() / self.confusion.sum(1)


def evaluate_and_save(model, test: mnist.Digits, out: Path, run_config: dict, history: list[dict], n_real: int,
                      n_synthetic: int, threads: int) -> Classified:
    """Every command that trains a classifier reports and keeps the same figures: real test accuracy and the
    confusion matrix, saved in the checkpoint beside its config."""
    predicted = predict_proba(model, test.images).argmax(1)
    confusion = confusion_matrix(test.labels.numpy(), predicted.numpy(), labels=range(10))
    accuracy = float(confusion.trace() / len(test))
    digest = checkpoint.save(out, model, run_config, {"test_accuracy": accuracy, "history": history,
                                                      "confusion": confusion.tolist()})
    return Classified(out, digest, accuracy, len(test) - int(confusion.trace()), len(test), n_real, n_synthetic,
                      threads, history, confusion)


def classify(n_real: int | None = None, synthetic: str | Path | None = None, ratio: float | None = None,
             augment: str = "none", epochs: int = 12, batch_size: int = 128, lr: float = 3e-3, min_steps: int = 600,
             val_size: int = mnist.VAL_SIZE, seed: int = 0, dataset: str = "mnist",
             out: str | Path = "runs/classifier.pt", overwrite: bool = False, data_dir: str | Path | None = None,
             device: str = "auto", progress: bool = True, log=print) -> Classified:
    """Train the classifier on n_real real images (+ synthetic at `ratio`), test it on real test, save it."""
    out = Path(out)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_steps=min_steps, augment=augment, seed=seed)
    config.check()
    release = checkpoint.claim(out, overwrite)
    try:
        threads = use_all_cores()
        mix = mixing.build(mnist.load("train", dataset, data_dir), n_real, seed, synthetic, ratio, val_size)
        test = mnist.load("test", dataset, data_dir)
        log(f"training on {mix.n_real:,} real + {mix.n_synthetic:,} synthetic {dataset} images "
            f"(augment: {augment}, validation: {val_size:,}, {threads} threads)")
        model, history = fit(mix.train, config, mix.val, device=device, progress=progress)
        run_config = {**asdict(config), "dataset": dataset, "n_real": mix.n_real, "n_synthetic": mix.n_synthetic,
                      "synthetic": str(synthetic) if synthetic else None, "ratio": mix.ratio, "val_size": val_size}
        return evaluate_and_save(model, test, out, run_config, history, mix.n_real, mix.n_synthetic, threads)
    finally:
        release()
