"""A sweep's search space, declared in params.yaml: validated once, and every conversion of it (to Ray Tune's
distributions, to Optuna's, a point checked against it) in this one place.

A validated space is {hyperparameter: fixed value, or (kind, args)} with kind one of SPACE_KINDS.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = ["SPACE_KINDS", "optuna_distributions", "parse_space", "point_problem", "tune_param_space"]

SPACE_KINDS = ("choice", "uniform", "loguniform", "int")


def _adapter(model: type[BaseModel], key: str) -> TypeAdapter:
    field = model.model_fields[key]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def _check_hp(model: type[BaseModel], key: str, value: Any, where: str) -> Any:
    try:
        return _adapter(model, key).validate_python(value)
    except ValidationError as e:
        raise ValueError(f"{key}{where}: {e.errors()[0]['msg']} (got {value!r})") from None


def parse_space(raw: Any, model: type[BaseModel]) -> dict[str, Any]:
    """Validate a search space: every hyperparameter of `model` present, each a fixed value or one {kind: args}.

    Returns {key: value or (kind, args)}; every value the space can produce is a valid `model` value.
    """
    _FLOAT_HPS = {k for k, f in model.model_fields.items() if f.annotation is float}
    _INT_HPS = {k for k, f in model.model_fields.items() if f.annotation is int}
    if not isinstance(raw, dict):
        raise ValueError(f"must be a mapping of hyperparameter -> dimension, got {type(raw).__name__}")
    allowed = list(model.model_fields)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; allowed: {', '.join(allowed)}")
    missing = [k for k in allowed if k not in raw]
    if missing:
        raise ValueError(f"missing hyperparameter(s) {missing}: give each a fixed value or a dimension")
    out: dict[str, Any] = {}
    for key in allowed:
        dim = raw[key]
        if not isinstance(dim, dict):  # a fixed value
            out[key] = _check_hp(model, key, dim, "")
            continue
        if len(dim) != 1 or next(iter(dim)) not in SPACE_KINDS:
            raise ValueError(
                f"{key}: a dimension is one of {{choice: [...]}}, {{uniform: [low, high]}}, "
                f"{{loguniform: [low, high]}}, {{int: [low, high]}}; got {dim!r}"
            )
        kind, args = next(iter(dim.items()))
        where = f".{kind}"
        if not isinstance(args, list) or not args:
            raise ValueError(f"{key}{where}: expected a non-empty list, got {args!r}")
        if kind == "choice":
            values = [_check_hp(model, key, v, where) for v in args]
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"{key}{where}: values must be distinct, got {args!r}")
            out[key] = ("choice", values)
            continue
        if len(args) != 2:
            raise ValueError(f"{key}{where}: expected [low, high], got {args!r}")
        if kind in ("uniform", "loguniform") and key not in _FLOAT_HPS:
            raise ValueError(
                f"{key}{where}: {kind} is for float hyperparameters ({', '.join(sorted(_FLOAT_HPS))}); "
                f"use choice or int"
            )
        if kind == "int" and key not in _INT_HPS:
            raise ValueError(
                f"{key}{where}: int ranges are for integer hyperparameters ({', '.join(sorted(_INT_HPS))})"
            )
        if kind == "int" and not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ValueError(f"{key}{where}: bounds must be integers, got {args!r}")
        low, high = (_check_hp(model, key, a, where) for a in args)
        if not low < high:
            raise ValueError(f"{key}{where}: low must be below high, got [{low}, {high}]")
        if kind == "loguniform" and not (low > 0 and math.isfinite(high)):
            raise ValueError(f"{key}{where}: bounds must be positive, got [{low}, {high}]")
        out[key] = (kind, [low, high])
    return out


def tune_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune distributions for a validated space (fixed values stay as they are)."""
    from ray import tune

    kinds = {
        "choice": lambda a: tune.choice(a),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "int": lambda a: tune.randint(a[0], a[1] + 1),  # randint's high is exclusive
    }
    return {key: kinds[dim[0]](dim[1]) if isinstance(dim, tuple) else dim for key, dim in space.items()}


def optuna_distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions for the searched dimensions of a validated space (fixed values are left out)."""
    import optuna

    kinds = {
        "choice": lambda a: optuna.distributions.CategoricalDistribution(list(a)),
        "uniform": lambda a: optuna.distributions.FloatDistribution(a[0], a[1]),
        "loguniform": lambda a: optuna.distributions.FloatDistribution(a[0], a[1], log=True),
        "int": lambda a: optuna.distributions.IntDistribution(a[0], a[1]),
    }
    return {k: kinds[d[0]](d[1]) for k, d in space.items() if isinstance(d, tuple)}


def point_problem(space: dict[str, Any], key: str, value: Any) -> str | None:
    """What is wrong with `value` for hyperparameter `key` of a validated space (None: it lies in the space)."""
    if key not in space:
        return f"not a hyperparameter of the space ({', '.join(space)})"
    dim = space[key]
    if not isinstance(dim, tuple):
        return None if value == dim else f"the space fixes {key} at {dim!r}, got {value!r}"
    kind, args = dim
    if kind == "choice":
        ok = value in args
    else:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (kind != "int" or isinstance(value, int))
            and args[0] <= value <= args[1]
        )
    if ok:
        return None
    allowed = f"one of {args}" if kind == "choice" else f"{kind} in [{args[0]}, {args[1]}]"
    return f"{value!r} is outside the space ({allowed})"
