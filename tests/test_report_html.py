"""The report stage's page (grutune.report.html), made by the stage's script from small inputs in the real formats:
its numbers against the real `dvc metrics show`, its images in a real headless browser (Debian's chromium), and each
sweep's new bests and parameter importance in its own direction (the classifier's accuracy up, the GAN's FID down)."""

import base64
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from grutune.objectives import CLASSIFIER_OBJECTIVE, GAN_OBJECTIVE
from grutune.report.html import fmt
from report_fixtures import CHROMIUM, DATASETS, GAN_HPARAMS, expected_new_bests, load, run_stage


@pytest.fixture(scope="module")
def stage(tmp_path_factory, write_params):
    """(root, page, written, commit, env) of one run of the stage's script, as DVC runs it."""
    return run_stage(tmp_path_factory.mktemp("report"), write_params)


def gan_part(page: str) -> str:
    return page.split('<h2 id="gan">', 1)[1]


def dataset_part(page: str, name: str) -> str:
    return page.split(f'<h2 id="{name}">', 1)[1].split("<h2", 1)[0]


# --------------------------------------------------------------------------- the page's content


def test_numbers_match_dvc_metrics_show(stage):
    root, page, written, _, env = stage
    cells = set(re.findall(r'<td class="num">([^<]*)</td>', page))
    assert fmt(written["mnist"]["classifier"]["test_accuracy"]) == "0.97123" and "0.97123" in cells
    assert "12.34568" in cells and "2000" in cells and "0.9712345678" not in page
    # Every number the real `dvc metrics show` prints for these files (the metrics and the details beside them) is a
    # cell of the page.
    stems = ("search", "search_details", "classifier", "classifier_details")
    files = [f"metrics/{d}/{f}.json" for d in DATASETS for f in stems] + [
        "metrics/gan.json",
        "metrics/gan_details.json",
        "metrics/gan_search.json",
        "metrics/gan_search_details.json",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--md", *files],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    numbers = [
        tok.strip()
        for line in out.splitlines()[2:]
        for tok in line.split("|")[2:]
        if re.fullmatch(r"-?\d[\d.e+-]*", tok.strip())
    ]
    # the classifier's: test, cost and per-class numbers; the GAN's: 11 and the Inception Score ratio
    assert len(numbers) == 2 * (8 + 2 + 3 + 10) + 12 + 8, out
    assert not [n for n in numbers if n not in cells], out


def test_the_pareto_front_is_drawn_with_the_picked_model_named(stage):
    _, page, written, *_ = stage
    for name in DATASETS:
        part = dataset_part(page, name)
        (picked,) = [t for t in written[name]["pareto"] if t["picked"]]
        assert f'alt="Pareto front, {name}"' in part
        assert f"Picked: trial {picked['trial']}" in part and "most_accurate" in part


def test_each_sweep_shows_what_its_accuracy_cost_and_its_total(stage):
    """The cost figure in the most telling unit trials.csv has for every trial: dollars where the sweep had prices
    (the classifiers'), else GPU-hours (the GAN's, whose cost_usd is empty); the caption gives the sweep's total."""
    _, page, written, *_ = stage
    for name in DATASETS:
        total = sum(t["cost_usd"] for t in written[name]["trials"])
        part = dataset_part(page, name)
        assert f'alt="cost against best_val_accuracy, {name}"' in part
        assert f"The sweep's total: <strong>{total:.3g} dollars</strong>" in part
    gpu_hours = sum(t["gpu_s"] for t in written["gan_trials"]) / 3600
    assert f"The sweep's total: <strong>{gpu_hours:.3g} GPU-hours</strong>" in gan_part(page)


def test_provenance_and_self_contained(stage):
    _, page, written, commit, _ = stage
    assert commit in page and "sunny-crab" in page
    for d in DATASETS:
        assert written[d]["content_hash"] in page
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    # Per dataset: importance, parallel coords, best so far, cost, Pareto front, confusion.
    # GAN: the sweep's four, samples, real, by class, validation FID.
    assert len(srcs) == 6 * len(DATASETS) + 4 + 4
    for src in srcs:  # every image is a PNG that decodes and is not blank
        assert src.startswith("data:image/png;base64,")
        img = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.min() < img.max()


def test_the_gan_section_shows_precision_recall_the_classes_and_the_kept_epoch(stage):
    """The GAN's scores in the metrics table, each with the file it is in (its DVC metrics, or the details beside
    them): precision and recall with their real references, the by-class picture, and the validation FID curve's file
    (its kept epoch: tests/test_report_figures.py)."""
    _, page, *_ = stage
    part = gan_part(page)
    for key, file, value in (
        ("fid", "gan.json", "12.34568"),
        ("inception_score_ratio", "gan.json", "0.775"),
        ("precision", "gan_details.json", "0.7123"),
        ("reference_recall_train_vs_test", "gan_details.json", "0.8234"),
        ("best_fid", "gan_search.json", "23.45679"),
        ("wall_time_s", "gan_search_details.json", "61.2"),
    ):
        assert re.search(rf"<code>{key}</code></td><td><code>{file}</code></td><td[^>]*>{value}<", part), key
    assert "real and generated images by class" in part and "metrics/gan_log.csv" in part


def test_a_conditional_gans_section_shows_its_grid_by_requested_class_and_its_scores_per_class(stage):
    """With gan_eval's details of a class-conditional generator: the class grid is captioned as samples drawn for each
    class, the class consistency is listed, and the per-class scores are a table of their own (not one cell)."""
    from grutune.report.html import gan_section

    root, *_ = stage
    _, gan = load(root)
    per_class = {
        "0": {
            "samples": 200,
            "real_samples": 98,
            "fid": 1.23456,
            "inception_score_ratio": 0.9,
            "precision": 0.7,
            "recall": 0.5,
            "reference_fid_train_vs_test": 0.2,
            "class_consistency": 0.955,
        },
        "1": {
            "samples": 200,
            "real_samples": 4,
            "fid": None,
            "inception_score_ratio": None,
            "precision": None,
            "recall": None,
            "class_consistency": 0.5,
        },
    }
    details = {
        **gan.details,
        "conditional": True,
        "class_consistency": 0.7275,
        "per_class_by": "requested",
        "per_class": per_class,
    }
    part = gan_section(dataclasses.replace(gan, details=details))
    assert "By requested class" in part and "draws for that class" in part
    assert re.search(r"<code>class_consistency</code></td><td><code>gan_details.json</code></td><td[^>]*>0.7275<", part)
    table = part.split("<code>per_class</code> in", 1)[1].split("</table>", 1)[0]
    assert "the samples drawn for the class" in table
    assert re.search(r"<td>0</td><td[^>]*>200</td><td[^>]*>1.2346</td>", table)
    assert re.search(r"<td>1</td><td[^>]*>200</td><td[^>]*></td>", table)  # too few real images: blank
    assert "0.955" in table and "{" not in table  # no dict printed in a cell

    unconditional = gan_section(gan)
    assert "By requested class" not in unconditional and "assigns to that class" in unconditional


# --------------------------------------------------------------------------- in a real browser


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    profile = cwd / "chromium-profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_every_image_loads_in_a_real_browser(stage, tmp_path):
    _, page, *_ = stage
    total = page.count("<img")
    # A copy of the page with a probe appended: once loaded, it lists each <img> that the browser failed to decode.
    # One deliberately broken image shows the probe can see a failure.
    probe = """<img id="canary" alt="canary" src="data:image/png;base64,iVBORw0KGgoAAAAN">
<script>window.addEventListener("load", () => {
  const imgs = [...document.images], bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = `loaded ${imgs.length - bad.length} of ${imgs.length}; broken: ${bad.map(i => i.alt).join("|")}`;
  document.body.appendChild(out);
});</script>"""
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "\n</body>"))
    proc = chromium("--virtual-time-budget=5000", "--dump-dom", copy.as_uri(), cwd=tmp_path)
    m = re.search(r'<pre id="probe">([^<]*)</pre>', proc.stdout)
    assert m, f"chromium printed no probe result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert m.group(1) == f"loaded {total} of {total + 1}; broken: canary"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_screenshot_is_not_blank(stage, tmp_path):
    root, *_ = stage
    shot = tmp_path / "shot.png"
    proc = chromium(
        f"--screenshot={shot}",
        "--window-size=1280,3000",
        "--hide-scrollbars",
        (root / "report/index.html").as_uri(),
        cwd=tmp_path,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    img = matplotlib.image.imread(shot)  # (3000, 1280, 3 or 4) in [0, 1]
    assert img.shape[:2] == (3000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)  # (3000, 1280)
    assert len(np.unique(rgb)) > 50  # plots, not a blank page


# --------------------------------------------------------------------------- each sweep in its direction


def new_best_table(part: str, col: str) -> list[tuple[str, str]]:
    """(trial, value) cells of a section's "Trials that set a new best" table."""
    m = re.search(
        rf"Trials that set a new best <code>{col}</code> \([a-z ]+\):</p><table><thead><tr><th>trial</th>"
        rf"(.*?)</tr></thead><tbody><tr><td>{col}</td>(.*?)</tr>",
        part,
    )
    assert m, part[:3000]
    return list(
        zip(re.findall(r"<th>([^<]*)</th>", m.group(1)), re.findall(r'<td class="num">([^<]*)</td>', m.group(2)))
    )


def test_gan_sweep_best_so_far_is_the_running_minimum_of_fid(stage):
    _, page, written, *_ = stage
    trials = written["gan_trials"]
    lowest = expected_new_bests(trials, GAN_OBJECTIVE)
    highest = expected_new_bests(trials, dataclasses.replace(GAN_OBJECTIVE, mode="max"))
    assert lowest != highest and len(lowest) >= 3  # the inputs tell the two directions apart
    part = gan_part(page)
    assert new_best_table(part, "best_fid") == [(str(n), fmt(v)) for n, v in lowest]
    assert "best_fid</code> (lower is better)" in part and "best so far, GAN sweep" in part
    # The classifier's sweeps, through the same code, keep the highest accuracy.
    mnist = written["mnist"]["trials"]
    assert new_best_table(dataset_part(page, "mnist"), "best_val_accuracy") == [
        (str(n), fmt(v)) for n, v in expected_new_bests(mnist, CLASSIFIER_OBJECTIVE)
    ]


def test_gan_importance_ranks_the_gan_hyperparameters_for_a_low_fid(stage):
    _, page, written, *_ = stage
    m = re.search(
        r"Parameter importance for <code>best_fid</code> \(lower is better\) over the (\d+) completed and "
        r"pruned trials [^:]*: (.*?)\.</figcaption>",
        gan_part(page),
    )
    assert m, gan_part(page)[:3000]
    ranked = re.findall(r"<code>([^<]*)</code> ([\d.]+)", m.group(2))
    usable = [t for t in written["gan_trials"] if t["status"] in ("completed", "pruned")]
    assert int(m.group(1)) == len(usable)
    varied = {k for k in GAN_HPARAMS if len({t[k] for t in usable}) > 1}
    # every GAN hyperparameter the default space varies (all but `conditional`, fixed false), none of the classifier's
    assert {k for k, _ in ranked} == varied == set(GAN_HPARAMS) - {"conditional"}
    assert ranked[0][0] == "lr_d", ranked  # what tells the lowest FIDs apart (lr_g would lead for the highest)
