"""benchmarks/gan_quality.py --conditional: the rule declared before the runs that picks the GAN's default."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("gan_quality", ROOT / "benchmarks" / "gan_quality.py")
gan_quality = sys.modules["gan_quality"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gan_quality)


def run(arm: str, seed: int, is_over_real: float, fid: float) -> dict:
    return {"arm": arm, "seed": seed, "IS / real": is_over_real, "FID": fid, "precision": 0.6, "recall": 0.3}


def runs(conditional: list[tuple[float, float]], unconditional: list[tuple[float, float]]) -> list[dict]:
    return [run("unconditional", s, *v) for s, v in enumerate(unconditional)] + [
        run("conditional", s, *v) for s, v in enumerate(conditional)
    ]


UNCONDITIONAL = [(0.86, 4.0), (0.87, 3.9), (0.88, 3.8)]  # medians: IS 0.87, FID 3.9


def test_no_verdict_before_three_seeds_of_each_arm():
    assert gan_quality.summarise(runs([(0.95, 2.0), (0.95, 2.0)], UNCONDITIONAL))["verdict"] is None


def test_conditional_becomes_the_default_only_where_both_medians_are_better():
    by_median = gan_quality.summarise(runs([(0.80, 3.0), (0.90, 3.5), (0.91, 9.0)], UNCONDITIONAL))["verdict"]
    assert by_median["default"] == "conditional"  # medians 0.90 > 0.87 and 3.5 <= 3.9, though one seed is worse
    higher_is_worse_fid = gan_quality.summarise(runs([(0.9, 4.2)] * 3, UNCONDITIONAL))["verdict"]
    assert higher_is_worse_fid["default"] == "unconditional"
    assert higher_is_worse_fid["conditional_better_on"] == ["IS / real"]
    level_is = gan_quality.summarise(runs([(0.87, 3.0)] * 3, UNCONDITIONAL))["verdict"]
    assert level_is["default"] == "unconditional"  # not higher: the default stays


def test_a_collapsed_seed_counts_as_run_and_against_its_arm():
    rows = runs([(0.95, 2.0), (0.95, 2.0)], UNCONDITIONAL) + [{"arm": "conditional", "seed": 2, "collapsed": "..."}]
    v = gan_quality.summarise(rows)["verdict"]
    assert v["default"] == "unconditional" and v["collapsed"] == {"unconditional": 0, "conditional": 1}
