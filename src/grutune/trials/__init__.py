"""Tune trials: the skeleton every trial runs (`skeleton`), the classifier's trial and sweep (`classifier`), the GAN's
(`gan`). Nothing is imported here, so the classifier's stages never load the GAN's code."""
