"""params.yaml as typed, frozen config objects that refuse unknown keys and impossible values.

Every pipeline stage calls `load_params()` first, so a bad value fails at the first stage, naming the key.
There are no defaults here: params.yaml is the one place a value is written down. What one trial is and what a sweep
optimises live in `grutune.objectives`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ByteSize, Field, ValidationError, field_validator, model_validator

from grutune.data import DATASETS
from grutune.errors import ConfigError
from grutune.objectives import (
    COSTS,
    OBJECTIVES,
    PICKS,
    GanTrialConfig,
    PositiveFloat,
    PositiveInt,
    Section,
    TrialConfig,
    one_of,
)
from grutune.space import parse_space, point_problem

__all__ = [
    "Budget",
    "FinalResources",
    "GanParams",
    "GanSearchParams",
    "Params",
    "PrepareParams",
    "Prices",
    "Resources",
    "SearchParams",
    "SweepParams",
    "TrackingParams",
    "TrainParams",
    "load_params",
    "read_best",
]

DatasetName = Annotated[str, one_of(DATASETS)]


# --------------------------------------------------------------------------- sections


class PrepareParams(Section):
    val_fraction: Annotated[float, Field(gt=0, lt=1)]


class Resources(Section):
    cpu: PositiveFloat
    gpu: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    # Ray's `memory` resource per trial, in bytes or with a unit ("600MB", "1GiB"); 0 reserves none. Ray then places
    # no more trials on a node than its memory resource holds. It is a reservation, not a limit on the process.
    memory: ByteSize = ByteSize(0)
    # Where a cluster has no GPU and grutune sees no autoscaler that adds one: train on CPUs (true) or wait (false).
    cpu_fallback: bool = False

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"fractions are allowed only up to 1 (Ray shares one GPU, not several); got {v}")
        return v


class FinalResources(Resources):
    """What a final stage (train, gan) asks of a Ray cluster it joins, for each of its Ray Train workers. Unused on a
    Ray the stage would start itself (a laptop): there it trains in its own process, on the GPU if one is visible."""

    cpu: PositiveFloat | None = None  # None: 1 beside a GPU, else every CPU of the cluster's largest node
    gpu: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    num_workers: PositiveInt = 1  # Ray Train workers of these resources each; above 1, data-parallel (DDP)


class Budget(Section):
    """A cap on what a sweep spends, in any of these units (the first one reached ends it); none: no cap."""

    trial_hours: PositiveFloat | None = None
    cpu_hours: PositiveFloat | None = None
    gpu_hours: PositiveFloat | None = None
    dollars: PositiveFloat | None = None

    @property
    def set_unit(self) -> str | None:
        """The first unit the budget is given in (None: no cap)."""
        units = ("trial_hours", "cpu_hours", "gpu_hours", "dollars")
        return next((k for k in units if getattr(self, k) is not None), None)


class Prices(Section):
    """Dollars per hour of each resource a trial holds: a node's hourly price shared out over its CPUs and GPUs (an
    instance of 1 GPU at $1.00/h: gpu 1.0, cpu 0). They give trials.csv its cost_usd and `budget.dollars` its unit."""

    cpu: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    gpu: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @property
    def set(self) -> bool:
        return bool(self.cpu or self.gpu)

    def per_second(self, resources: dict[str, float]) -> float:
        """Dollars one trial holding `resources` costs a second."""
        return (resources.get("cpu", 0) * self.cpu + resources.get("gpu", 0) * self.gpu) / 3600


class SweepParams(Section):
    """What every sweep has: its budget (trials, ASHA's epochs and rungs, the per-trial subset), how it runs
    (concurrency, retries, storage, resources) and its search space, validated against the sweep's trial model."""

    TRIAL_MODEL: ClassVar[type[BaseModel]]

    num_samples: PositiveInt
    max_epochs: PositiveInt
    grace_period: PositiveInt
    reduction_factor: Annotated[float, Field(gt=1, allow_inf_nan=False)]
    # asha: Ray's ASHAScheduler stops trials at its rungs | top_k: every trial trains grace_period epochs, then the
    # best 1/reduction_factor of them go on to max_epochs (grutune.sweep.top_k)
    scheduler: Literal["asha", "top_k"] = "asha"
    startup_trials: PositiveInt | Annotated[float, Field(gt=0, lt=1)]  # a count, or a share of num_samples
    multivariate: bool
    constant_liar: bool
    max_trial_epochs: PositiveInt | None
    # A cap on what the sweep spends (hours of trials, CPU- or GPU-hours, dollars at `price_per_hour`), measured.
    budget: Budget = Budget()
    price_per_hour: Prices = Prices()
    max_concurrent_trials: Annotated[int, Field(ge=0)]
    train_subset: PositiveInt | None
    max_failures: Annotated[int, Field(ge=0)]
    storage: Annotated[str, Field(min_length=1)] | None
    resources: Resources
    space: dict[str, Any]
    # Configs (all or some of the searched hyperparameters) tried first, in order, before TPE's own start-up trials,
    # as Tune's and Optuna's searchers take them (points_to_evaluate, Study.enqueue_trial): known-good settings.
    points_to_evaluate: list[dict[str, Any]] = []

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v: Any) -> dict[str, Any]:
        return parse_space(v, cls.TRIAL_MODEL)

    @model_validator(mode="after")
    def _points(self) -> SweepParams:
        for i, point in enumerate(self.points_to_evaluate):
            for key, value in point.items():
                if (problem := point_problem(self.space, key, value)) is not None:
                    raise ValueError(
                        f"points_to_evaluate[{i}].{key}: {problem}; a point must lie in the space: change it, or "
                        f"set points_to_evaluate to []"
                    )
        return self

    @field_validator("startup_trials", mode="before")
    @classmethod
    def _startup(cls, v: Any) -> Any:
        ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
            isinstance(v, float) and (0 < v < 1 or (v >= 1 and v.is_integer()))
        )
        if not ok:
            raise ValueError(
                f"must be a number of trials (1, 2, ...) or a share of num_samples between 0 and 1 (got {v!r})"
            )
        return int(v) if isinstance(v, float) and v >= 1 else v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        """A local storage must be able to be a directory: refused here, before any work, if it is a file or lies
        under one (a relative path is the DVC workspace's)."""
        if v is None or "://" in v:
            return v
        from grutune.io import not_a_directory, workspace_root

        if (file := not_a_directory(workspace_root() / v)) is not None:
            raise ValueError(
                f"{v} cannot hold sweeps: {file} is a file, not a directory (give a directory, a "
                f"cloud URI such as s3://bucket/dir, or null for .grutune/sweeps)"
            )
        return v

    @model_validator(mode="after")
    def _dollars(self) -> SweepParams:
        if self.budget.dollars is not None and not self.price_per_hour.set:
            raise ValueError(
                "budget.dollars needs a price: set price_per_hour.gpu (dollars per GPU-hour a trial holds) and/or "
                "price_per_hour.cpu, or give the budget in trial_hours, cpu_hours or gpu_hours"
            )
        return self

    @model_validator(mode="after")
    def _top_k(self) -> SweepParams:
        if self.scheduler == "top_k" and (unit := self.budget.set_unit) is not None:
            raise ValueError(
                f"scheduler top_k plans its trials before they run, in trial-epochs, and budget.{unit} is measured "
                "while they run: bound a top_k sweep with num_samples or max_trial_epochs (and set budget's keys to "
                "null), or use scheduler asha"
            )
        return self

    @model_validator(mode="after")
    def _grace(self) -> SweepParams:
        if self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period ({self.grace_period}) must not exceed max_epochs ({self.max_epochs})")
        return self


class SearchParams(SweepParams):
    """The classifier sweep (`search`): also its objectives, and which point of their Pareto front to retrain."""

    TRIAL_MODEL: ClassVar[type[BaseModel]] = TrialConfig

    objectives: list[Literal[tuple(OBJECTIVES)]]  # type: ignore[valid-type]
    pick: Literal[PICKS]  # type: ignore[valid-type]
    pick_within: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "val_accuracy":
            raise ValueError(
                "the first objective must be val_accuracy (ASHA prunes on it); add costs after it, "
                f"from: {', '.join(list(OBJECTIVES)[1:])}"
            )
        if len(set(v)) != len(v):
            raise ValueError(f"an objective is listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _pick(self) -> SearchParams:
        if self.pick in COSTS and COSTS[self.pick] not in self.objectives:
            raise ValueError(
                f"pick: {self.pick} needs {COSTS[self.pick]} in search.objectives "
                f"(now {self.objectives}); or pick: most_accurate"
            )
        return self


class GanSearchParams(SweepParams):
    """The GAN sweep (`gan_search`): also how many samples are scored, and when a generator has collapsed."""

    TRIAL_MODEL: ClassVar[type[BaseModel]] = GanTrialConfig

    eval_samples: Annotated[int, Field(ge=2)]
    min_diversity: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class TrainParams(Section):
    epochs: PositiveInt
    augment: bool
    resources: FinalResources = FinalResources()
    max_failures: Annotated[int, Field(ge=0)] = 3


class GanParams(Section):
    dataset: DatasetName
    epochs: PositiveInt
    batch_size: PositiveInt
    noise_dim: PositiveInt
    train_subset: PositiveInt | None
    eval_samples: Annotated[int, Field(ge=2)]
    eval_every: PositiveInt
    loss: Literal["hinge", "nonsaturating"]
    ema_decay: Annotated[float, Field(ge=0, lt=1)]
    r1_gamma: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    lr_schedule: Literal["constant", "cosine"] = "constant"
    resources: FinalResources = FinalResources()
    max_failures: Annotated[int, Field(ge=0)] = 3

    @field_validator("resources")
    @classmethod
    def _one_worker(cls, v: FinalResources) -> FinalResources:
        if v.num_workers != 1:
            raise ValueError(f"num_workers must be 1: the GAN trains on one Ray Train worker; got {v.num_workers}")
        return v


class TrackingParams(Section):
    wandb: bool
    project: Annotated[str, Field(min_length=1)]
    log_models: bool


class Params(Section):
    datasets: Annotated[tuple[DatasetName, ...], Field(min_length=1)]
    seed: Annotated[int, Field(ge=0)]
    prepare: PrepareParams
    search: SearchParams
    train: TrainParams
    gan: GanParams
    gan_search: GanSearchParams
    tracking: TrackingParams

    @field_validator("datasets")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"datasets must not repeat a name, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _gan_dataset(self) -> Params:
        if self.gan.dataset not in self.datasets:
            raise ValueError(
                f"gan.dataset {self.gan.dataset!r} must be one of datasets {list(self.datasets)}: "
                f"the GAN is scored with the classifier trained on that dataset"
            )
        return self


# --------------------------------------------------------------------------- loading


def _format(e: ValidationError, path: Path) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            model: Any = Params
            for p in parent:
                model = model.model_fields[p].annotation if isinstance(p, str) else model
            allowed = ", ".join(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else "?"
            msg = f"unknown key; allowed here: {allowed}"
        elif err["type"] not in ("value_error", "missing", "assertion_error"):
            msg += f" (got {err['input']!r})"
        lines.append(f"  {loc}: {msg}")
    n = len(lines)
    return f"{path}: {n} invalid value{'s' if n > 1 else ''}\n" + "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ConfigError naming every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (run from the repository root)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, path)) from None


def read_best(path: str | Path, model: type[BaseModel] = TrialConfig) -> tuple[dict, Any]:
    """A sweep's best.yaml, with its config validated like params.yaml."""
    path = Path(path)
    try:
        best = yaml.safe_load(path.read_text())
        return best, model(**best["config"])
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run its search stage first (dvc repro)") from None
    except ValidationError as e:
        lines = [f"  config.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path} is not a valid best-config file:\n" + "\n".join(lines)) from None
    except (yaml.YAMLError, TypeError, KeyError) as e:
        raise ConfigError(f"{path} is not a valid best-config file: {type(e).__name__}: {e}") from None
