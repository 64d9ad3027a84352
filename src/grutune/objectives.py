"""What one trial of each kind is and what it is scored on.

A trial's hyperparameters (`TrialConfig`, `GanTrialConfig`: one point of each search space), what each sweep optimises
(`Objective`: `CLASSIFIER_OBJECTIVE`, `GAN_OBJECTIVE`), the classifier's cost columns and picks, and the validated
building blocks the params schema (`grutune.config`) shares with them: frozen sections and names chosen from a
registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from grutune.models import BACKBONES, CELLS

__all__ = [
    "CLASSIFIER_OBJECTIVE",
    "COSTS",
    "COST_COLUMNS",
    "GAN_OBJECTIVE",
    "GENERATOR_KINDS",
    "OBJECTIVES",
    "PICKS",
    "GanTrialConfig",
    "Objective",
    "PositiveFloat",
    "PositiveInt",
    "Section",
    "TrialConfig",
    "one_of",
]


def one_of(names) -> AfterValidator:
    allowed = tuple(names)

    def check(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"unknown name {v!r}; allowed: {', '.join(allowed)}")
        return v

    return AfterValidator(check)


CellName = Annotated[str, one_of(CELLS)]
BackboneName = Annotated[str, one_of(BACKBONES)]
# The generator kinds gan/models.py's GENERATORS registers (tests/test_gan_models.py checks that they agree), named
# here so that the classifier's stages, which read these params but never build a GAN, do not depend on GAN code.
GENERATOR_KINDS = ("rows", "rows_conv", "deconv")
GeneratorName = Annotated[str, one_of(GENERATOR_KINDS)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Section(BaseModel):
    """A part of params.yaml or of a trial's config: unknown keys are refused, and nothing changes it once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialConfig(Section):
    """One point of the classifier search space: the model's architecture plus its optimiser settings."""

    cell: CellName
    hidden_size: PositiveInt
    num_layers: PositiveInt
    bidirectional: bool
    dropout: Annotated[float, Field(ge=0, lt=1)]
    backbone: BackboneName
    lr: PositiveFloat
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    batch_size: PositiveInt

    def model_kwargs(self) -> dict[str, Any]:
        """The subset of keys the classifier's constructor takes."""
        return self.model_dump(exclude={"lr", "weight_decay", "batch_size"})


class GanTrialConfig(Section):
    """One point of the GAN search space: the generator's kind and GRU, the discriminator's backbone, the learning
    rates, and whether both players are class-conditional."""

    generator: GeneratorName
    hidden_size: PositiveInt
    num_layers: PositiveInt
    backbone: BackboneName
    lr_g: PositiveFloat
    lr_d: PositiveFloat
    # A generator that draws the class it is asked for, against a projection discriminator. Its default reads a
    # best.yaml written before conditioning existed as the unconditional GAN it was; a space names it all the same.
    conditional: bool = False


# The classifier sweep's objectives: validation accuracy (maximised, what ASHA prunes on), then any of the model's
# costs (minimised), measured in each trial on the trial's hardware.
OBJECTIVES = {"val_accuracy": "max", "params": "min", "latency_ms": "min", "latency_batch_ms": "min"}
# What every classifier trial measures of its model besides its accuracy: trials.csv's cost columns, the costs
# search.objectives may add, and what the train stage reports of the deployed model.
COST_COLUMNS = tuple(OBJECTIVES)[1:]
COSTS = {"smallest": "params", "fastest": "latency_ms", "fastest_batch": "latency_batch_ms"}
PICKS = ("most_accurate", *COSTS)


@dataclass(frozen=True)
class Objective:
    """What a sweep optimises, declared once for the sweep that runs it and the report that reads its files."""

    hp_model: type[BaseModel]  # one trial's config: its fields are trials.csv's hyperparameter columns
    metric: str  # trials.csv holds best_<metric>; search_progress_time.csv trial_<metric>, best_<metric>
    mode: str  # "max" or "min"
    columns: tuple[str, ...] = ()  # what each trial reports besides the metric, kept in trials.csv


CLASSIFIER_OBJECTIVE = Objective(TrialConfig, "val_accuracy", "max", COST_COLUMNS)
GAN_OBJECTIVE = Objective(GanTrialConfig, "fid", "min")
