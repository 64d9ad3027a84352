"""grutune: reproducible hyperparameter search for recurrent image models."""

__version__ = "0.1.0"
