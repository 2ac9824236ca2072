"""The benchmark's GAN variants, which need the generator side. Each is a source of extra images for one
(size, seed) of the sweep, given that cell's labeller (its `classical` classifier, trained on the labelled
subset alone). No label outside the subset reaches them: the conditional GAN learns from the subset and
the labeller's labels, and the realism filter works in the labeller's own features, not the reference's."""

import json
import math
from pathlib import Path

import torch

from augment import trainer
from augment.checkpoint import BUNDLED, load_generator
from augment.pipeline import draw_to_mix
from augment.quality import embed, real_manifold, realism
from augment.ssgan import BATCH, LR, LR_G, fit_discriminator, require_unconditional
from classifier import checkpoint as classifier_checkpoint
from classifier.model import DigitCNN
from data import mnist
from data.errors import InputError
from data.files import sha256_of
from data.mnist import Digits

REAL_IMAGES = 10_000  # unlabelled train images whose features span the real manifold


class Conditional:
    """Per (size, seed): a conditional GAN trained for `minutes` of training time on the labelled subset plus the
    labeller's confident labels of the rest of the pool (all labels at every-label size), relabelled every
    `relabel_every` epochs by the classifier it improves if that is not 0, cached in
    folder/gans/ so that a resumed or extended sweep reuses it; it then draws class-balanced samples, twice
    as many as the largest ratio needs, for the benchmark to keep where the labeller agrees with the class."""

    def __init__(self, folder: Path, train: Digits, dataset: str, minutes: float, most: float, val_size: int,
                 device: str, log, relabel_every: int = 0):
        if val_size != mnist.VAL_SIZE:  # the GAN draws its labelled subset as classify does: the cell must too
            raise InputError(f"the conditional variant needs the default validation split ({mnist.VAL_SIZE:,}), "
                             f"got {val_size:,}")
        self.folder, self.train, self.dataset, self.minutes, self.most = folder / "gans", train, dataset, minutes, most
        self.device, self.log, self.relabel_every = device, log, relabel_every

    def config(self, size: int, seed: int, labeller: Path | None) -> trainer.GanConfig:
        return trainer.make_config(conditional=True, n_real=size, seed=seed, labeller=labeller, epochs=100_000,
                                   eval_every=0, dataset=self.dataset, relabel_every=self.relabel_every if labeller else 0)

    def settings(self) -> dict:
        recipe = self.config(1, 0, None).as_dict()
        relabel = {"gan_relabel_every": self.relabel_every} if self.relabel_every else {}
        return {"gan_minutes": self.minutes, **relabel,
                "gan": {k: v for k, v in recipe.items() if k not in ("n_real", "seed")}}

    def cell(self, size: int, seed: int) -> tuple[Path, Path | None, trainer.GanConfig]:
        """The (size, seed) GAN's folder, its labeller's file (None at every-label size) and its config."""
        labeller = self.folder / f"n{size}-seed{seed}-labeller.pt" if size < len(self.train) else None
        return self.folder / f"n{size}-seed{seed}", labeller, self.config(size, seed, labeller)

    def check_cache(self, sizes, seeds) -> None:
        """A cached GAN is reused only for the settings it was trained with (--overwrite keeps gans/): one of other
        settings is refused, before any training."""
        def recipe(config: trainer.GanConfig) -> dict:
            return {k: v for k, v in config.as_dict().items() if k not in ("labeller", "labeller_sha256", "epochs")}
        for size in sizes:
            for seed in seeds:
                run_dir, _, wanted = self.cell(size, seed)
                if not (run_dir / "checkpoint.pt").is_file():
                    continue
                done = run_dir / "budget.json"
                spent = json.loads(done.read_text()).get("minutes") if done.is_file() else self.minutes
                if recipe(trainer.resumed_config(run_dir)) != recipe(wanted) or spent != self.minutes:
                    raise InputError(f"{run_dir} holds a GAN trained with other settings than these: delete it, or "
                                     f"choose another --out")

    def __call__(self, size: int, seed: int, labeller: DigitCNN) -> tuple[torch.Tensor, torch.Tensor]:
        run_dir, labeller_path, config = self.cell(size, seed)
        self.folder.mkdir(parents=True, exist_ok=True)
        if labeller_path and not labeller_path.exists():  # the first one stays: the GAN's labels came from it
            classifier_checkpoint.save(labeller_path, labeller, {"n_real": size, "seed": seed, "n_synthetic": 0,
                                                                 "val_size": mnist.VAL_SIZE, "dataset": self.dataset}, {})
        done = run_dir / "budget.json"  # written once the minutes are spent: a rerun draws from the same GAN
        resume = (run_dir / "checkpoint.pt").is_file()
        self.check_cache([size], [seed])
        if not done.is_file():
            config = trainer.resumed_config(run_dir) if resume else config
            run = trainer.start(run_dir, config, self.train, resume, self.device)
            left = max(self.minutes - run.seconds / 60, 1e-9)
            self.log(f"  conditional GAN for {size:,} labels, seed {seed}: training {left:.1f} more minutes in {run_dir}")
            outcome = trainer.train(run, left, progress=False)
            if outcome.stopped == "interrupted":
                raise KeyboardInterrupt  # its checkpoint is saved: a rerun of the sweep resumes it
            done.write_text(json.dumps({"minutes": self.minutes, "step": outcome.step}) + "\n")
        g, _ = load_generator(run_dir / "generator.pt")
        return draw_to_mix(g, math.ceil(self.most * size), seed)


class Filtered:
    """The pool's samples on the real manifold: realism score >= min_realism, in the labeller's features, against
    10,000 unlabelled train images whose classes are the labeller's predictions (its per-class pruning)."""

    def __init__(self, pool: torch.Tensor, train: Digits, min_realism: float):
        self.pool, self.min_realism = pool, min_realism
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:REAL_IMAGES]
        self.real = train.images[pick]

    def settings(self) -> dict:
        return {"min_realism": self.min_realism, "real_images": REAL_IMAGES}

    def __call__(self, size: int, seed: int, labeller: DigitCNN) -> tuple[torch.Tensor, None]:
        features, predicted = embed(labeller, self.real)
        manifold = real_manifold(features, torch.from_numpy(predicted))
        keep = realism(manifold, embed(labeller, self.pool)[0]) >= self.min_realism
        return self.pool[torch.from_numpy(keep)], None


class Discriminator:
    """Per (size, seed): a classifier that is a semi-supervised GAN's discriminator, trained `steps` steps on the
    labelled subset and the other train images without labels, its generator starting from `generator` (the
    bundled one learnt from the train images without their labels)."""

    def __init__(self, steps: int, device: str, generator: Path = BUNDLED, progress: bool = False):
        self.steps, self.device, self.source, self.progress = steps, device, Path(generator), progress
        self.generator, payload = load_generator(generator)
        require_unconditional(self.generator, generator)
        self.dataset = payload["info"]["run"]["dataset"]

    def settings(self) -> dict:
        return {"steps": self.steps, "batch": BATCH, "lr": LR, "lr_g": LR_G, "generator_sha256": sha256_of(self.source)}

    def __call__(self, size: int, seed: int, real: Digits, unlabelled: torch.Tensor) -> tuple[DigitCNN, int, int]:
        model = fit_discriminator(real, unlabelled, self.generator, self.steps, seed, self.device, self.progress)
        return model, self.steps, len(unlabelled)
