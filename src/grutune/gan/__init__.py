"""The GAN: a GRU generator (one of GENERATORS) against a spectral-norm CNN discriminator, scored in the features
of the classifier the `train` stage trained on the same dataset.

- `models`: the generators (the GENERATORS registry) and the discriminator;
- `training`: how a GAN is trained, whatever its architecture (the `Recipe`), and the one GAN training loop,
  `fit_gan`, that a Tune trial and the final GAN both call;
- `scoring`: FID, Inception Score, precision and recall, class shares and grids of samples;
- `final`: the final GAN, keeping its best-FID epoch, as the gan and gan_eval stages' jobs.

The names below are the public face; `final` is imported on its own (`grutune.gan.final`), so that the GAN sweep's
trials do not depend on the final stages' code.
"""

from grutune.gan.models import GENERATOR_NAMES, GENERATORS, Discriminator, Generator, build_generator
from grutune.gan.scoring import FidScorer, class_grid, classifier_view, diversity, evaluate_gan, generate, score
from grutune.gan.training import Gan, Recipe, fit_gan, new_gan

__all__ = [
    "GENERATORS",
    "GENERATOR_NAMES",
    "Discriminator",
    "FidScorer",
    "Gan",
    "Generator",
    "Recipe",
    "build_generator",
    "class_grid",
    "classifier_view",
    "diversity",
    "evaluate_gan",
    "fit_gan",
    "generate",
    "new_gan",
    "score",
]
