"""A final run's checkpoints: a dict of weights, the model's constructor arguments (to rebuild it exactly) and plain
values, loaded with weights_only=True; and the random state a resumable run keeps beside its weights.

The train stage's classifier is read back here (`load_classifier`, for the GAN stages); the gan stage's generator in
grutune.gan.final, so that this module, which the classifier's stages import, holds no GAN code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from grutune.errors import GrutuneError
from grutune.io import atomic_path
from grutune.models import RecurrentClassifier, build_classifier

__all__ = ["load_checkpoint", "load_classifier", "restore_rng", "rng_state", "save_checkpoint"]


def save_checkpoint(path, model, **extra) -> None:
    """A checkpoint is a dict: weights, the constructor's kwargs (to rebuild it exactly) and plain metadata."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "model_kwargs": dict(model.kwargs), **extra}, tmp)


def load_checkpoint(
    path, device: torch.device | str = "cpu", *, data_hash: str | None = None, stage: str | None = None
) -> dict:
    """Load a checkpoint dict without unpickling arbitrary objects (weights_only=True); with `data_hash`, refusing one
    trained on other data, to be written again by `stage`."""
    path = Path(path)
    if not path.is_file():
        raise GrutuneError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises weights_only=False: not for a file we cannot trust
        boilerplate = ("weights_only", "torch.load", "Please file an issue")  # torch's advice around the cause
        lines = [line for line in str(e).splitlines() if line.strip() and not any(b in line for b in boilerplate)]
        raise GrutuneError(
            f"checkpoint {path} cannot be loaded: it holds more than weights and plain values, which grutune never "
            f"unpickles ({lines[-1].strip() if lines else type(e).__name__}); the file is damaged or not one of "
            f"grutune's: rerun the stage that writes it"
        ) from None
    except Exception as e:  # a truncated file, or not a torch file at all: name it rather than dump a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GrutuneError(
            f"checkpoint {path} cannot be loaded ({first}): the file is damaged or truncated: rerun the stage that "
            f"writes it"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_kwargs" not in ckpt:
        raise GrutuneError(
            f"checkpoint {path} is not one of grutune's (no model weights and model_kwargs in it): rerun the stage "
            f"that writes it"
        )
    if data_hash is not None and ckpt.get("data_hash") != data_hash:
        raise GrutuneError(
            f"{path} was trained on other data ({ckpt.get('data_hash')}) than the prepared dataset "
            f"({data_hash}): rerun the {stage} stage"
        )
    return ckpt


def load_classifier(path, data_hash: str, device: torch.device | str = "cpu") -> tuple[RecurrentClassifier, dict]:
    """The `train` stage's classifier and its checkpoint, refusing one trained on other data than `data_hash`."""
    ckpt = load_checkpoint(path, device, data_hash=data_hash, stage="train")
    return build_classifier(ckpt["model_kwargs"], ckpt["model"]).to(device), ckpt


def rng_state(device: torch.device) -> dict:
    """torch's random state, as a resumable run's checkpoint keeps it (`rng`, and `cuda_rng` on a GPU)."""
    state = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    """Put back the random state `rng_state` saved, so a resumed run draws what the uninterrupted one would."""
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
