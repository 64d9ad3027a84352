"""What a sweep is, and its identity: the settings and the code that decide its trials' results.

A sweep's id names its folder. It covers the dataset and its content hash, the seed, the search space, the per-trial
budget, the objectives, anything a sweep adds (`extra_identity`), and the code that computes a trial's result: every
grutune module the trainable's module reaches through its imports (`grutune.codehash`), less those that cannot change
a result (`NOT_TRIAL_CODE`: the sweep driver, the schema, logging, tracking, downloads). Code counts by its syntax
tree without docstrings, so comments, docstrings and formatting do not count. The number of trials is not part of
it: raising it adds trials to the same study.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grutune.codehash import PACKAGE, imported_modules, reachable, source_digest
from grutune.config import SweepParams
from grutune.objectives import Objective

__all__ = ["NOT_TRIAL_CODE", "Sweep", "code_changes", "trial_code"]

# Modules (and packages) whose changes cannot change a trial's result: the sweep machinery around the trial, the
# params schema (the values it validates are in the identity), errors, files, logging and tracking, the cluster's
# resources, and reading the raw downloads (the prepared data's content hash is in the identity).
NOT_TRIAL_CODE = (
    "grutune.sweep",
    "grutune.config",
    "grutune.objectives",
    "grutune.space",
    "grutune.codehash",
    "grutune.errors",
    "grutune.io",
    "grutune.tracking",
    "grutune.cluster",
    "grutune.report",
    "grutune.data.download",
    "grutune.data.formats",
    "grutune.data.prepared",
)


@functools.cache
def _digests(files: tuple[tuple[str, Path, int], ...]) -> dict[str, str]:
    return {name: source_digest(path) for name, path, _ in files}


def trial_code(trainable: Callable, package: Path = PACKAGE) -> dict[str, str]:
    """{module: digest} of the code that computes the results of `trainable`'s trials: its module and every grutune
    module it reaches, less `NOT_TRIAL_CODE` (the grutune source read from `package`)."""
    module = trainable.__module__
    if module.split(".")[0] == "grutune":
        files = reachable([module], exclude=NOT_TRIAL_CODE, package=package)
    else:  # a trainable of one's own (a test's): its file, and the grutune modules it reaches
        loaded = sys.modules.get(module)  # a script's own trainable is in __main__, which has no spec
        origin = Path(getattr(loaded, "__file__", None) or importlib.util.find_spec(module).origin)
        files = {
            module: origin,
            **reachable(imported_modules(origin, package), exclude=NOT_TRIAL_CODE, package=package),
        }
    # Read once per process, and again where a file changed since (a long-lived process, such as a test session).
    return dict(_digests(tuple((name, path, path.stat().st_mtime_ns) for name, path in sorted(files.items()))))


def code_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The modules whose code differs between two `trial_code`s (changed, added or removed), sorted."""
    return sorted(m for m in {*old, *new} if old.get(m) != new.get(m))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Sweep:
    """One sweep: the classifier's and the GAN's differ only in these (see grutune.trials)."""

    name: str  # dataset name, or e.g. "gan-mnist"
    key: str  # its section of params.yaml: "search" or "gan_search"
    params: SweepParams  # that section
    objective: Objective  # the trial model, the metric and its direction, what trials report besides
    trainable: Callable[..., None]  # a function of (config, *, data, settings)
    seed: int
    data_hash: str
    extra_identity: Any = None
    costs: tuple[str, ...] = ()  # objectives minimised besides `metric` (a multi-objective sweep); Pareto front

    @property
    def metric(self) -> str:
        return self.objective.metric

    @property
    def mode(self) -> str:
        return self.objective.mode

    @property
    def hp_model(self):
        return self.objective.hp_model

    @property
    def columns(self) -> tuple[str, ...]:
        return self.objective.columns

    @property
    def settings_id(self) -> str:
        """The identity of everything but the code: sweeps with the same settings id differ only in their code."""
        s = self.params
        key = {
            "dataset": self.name,
            "data": self.data_hash,
            "seed": self.seed,
            "space": s.space,
            "budget": [s.max_epochs, s.grace_period, s.reduction_factor, s.train_subset, s.startup_trials],
        }
        if s.scheduler != "asha":  # a sweep that screens its trials is another sweep (ASHA's keep their identity)
            key["scheduler"] = s.scheduler
        if len(self.costs):
            key["objectives"] = [self.metric, *self.costs]
        if self.extra_identity:
            key["extra"] = self.extra_identity
        return _digest(key)

    @functools.cached_property
    def code(self) -> dict[str, str]:
        """{module: digest} of the trial's code (`trial_code`), read once: a sweep keeps the identity it started with
        even if a file changes while it runs."""
        return trial_code(self.trainable)

    @property
    def sweep_id(self) -> str:
        """`<name>-<digest of the settings and the trial code>`: the sweep's folder."""
        return f"{self.name}-{_digest({'settings': self.settings_id, 'code': self.code})}"

    def better(self, a: float, b: float) -> bool:
        """Whether value a beats b (NaN never does)."""
        return not math.isnan(a) and (math.isnan(b) or (a > b if self.mode == "max" else a < b))
