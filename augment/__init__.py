"""The generator side: DCGAN models and training, sampling, pseudo-labelling, the generate -> label -> HDF5
pipeline, GAN quality metrics. Its commands, as library functions: train, generate, evaluate, benchmark,
semi_supervised, demo."""

from augment.commands import benchmark, evaluate, generate, semi_supervised, train
from augment.tour import demo

__all__ = ["benchmark", "demo", "evaluate", "generate", "semi_supervised", "train"]
