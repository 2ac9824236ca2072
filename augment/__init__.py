"""The generator side: DCGAN models, GAN training, sampling, pseudo-labelling, quality metrics."""
