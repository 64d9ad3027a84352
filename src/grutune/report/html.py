"""The report's page: every dataset's sweep and classifier, and the GAN's sweep and final model, as one
self-contained HTML file.

Plots are PNGs embedded as base64 data URIs, so the page has no external assets or scripts and reads offline. Every
metric printed is a value from a metrics file or the details file beside it, formatted as `dvc metrics show` prints it.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from grutune.objectives import COST_COLUMNS
from grutune.report.analysis import new_bests, param_distributions, param_importances, spend, usable_trials
from grutune.report.figures import (
    best_so_far_figure,
    confusion_figure,
    cost_figure,
    image_png,
    importance_figure,
    parallel_coordinates_figure,
    pareto_figure,
    png_bytes,
    val_fid_figure,
)
from grutune.report.inputs import DatasetResults, GanResults, SweepResults

__all__ = [
    "CLASSIFIER_KEYS",
    "CSS",
    "GAN_CLASS_KEYS",
    "GAN_KEYS",
    "SEARCH_KEYS",
    "dataset_section",
    "fmt",
    "gan_section",
    "metrics_table",
    "pareto_caption",
    "render_report",
    "sweep_html",
]

# Known metric keys in the order the page lists them; keys not listed here follow, sorted.
SEARCH_KEYS = ("best_val_accuracy", "trials", "completed", "pruned", "failed", "errored", "epochs_run", "wall_time_s")
CLASSIFIER_KEYS = ("test_accuracy", "test_loss", *COST_COLUMNS, "latency_hardware")
GAN_KEYS = (
    "fid",
    "reference_fid_train_vs_test",
    "inception_score_ratio",
    "inception_score",
    "inception_score_std",
    "reference_inception_score_test",
    "precision",
    "reference_precision_train_vs_test",
    "recall",
    "reference_recall_train_vs_test",
    "class_share_distance",
    "conditional",
    "class_consistency",
    "eval_samples",
)
# The GAN's per-class scores (gan_eval's details, `per_class`), in the order its table shows them.
GAN_CLASS_KEYS = (
    "samples",
    "fid",
    "reference_fid_train_vs_test",
    "inception_score_ratio",
    "precision",
    "recall",
    "class_consistency",
)


def fmt(v: Any) -> str:
    """A metric as `dvc metrics show` prints it: floats rounded to 5 decimal places, everything else as it is.

    (DVC 3's `metrics show` prints str(round(v, 5)); it is `exp show` that prints 5 significant digits.)
    """
    return str(round(v, 5)) if isinstance(v, float) else str(v)


def _ordered(metrics: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    """Scalar keys: the known ones in their order, then the rest sorted (nested dicts get their own tables)."""
    scalar = [k for k in metrics if not isinstance(metrics[k], (dict, list))]
    return [k for k in known if k in scalar] + sorted(set(scalar) - set(known))


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
th { background: #f3f3f3; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.9em; }
.mono { word-break: break-all; }
figure { display: inline-block; margin: 0.5em 1.5em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 900px; }
img { max-width: 100%; }
img.pixels { width: 360px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #555; font-style: italic; }
"""


def _e(v: Any) -> str:
    return escape(str(v))


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(fig: Figure | None, alt: str, caption: str, empty: str) -> str:
    if fig is None:
        return f'<p class="note">{_e(empty)}</p>'
    return f"<figure>{_img(png_bytes(fig), alt)}<figcaption>{caption}</figcaption></figure>"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """rows hold pre-escaped cell HTML; cells from column `numeric_from` on are right-aligned numbers."""
    head = f"<thead><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr></thead>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def metrics_table(datasets: list[DatasetResults]) -> str:
    """Rows: each key of the search and train stages' metrics and details files; columns: datasets. Cells as `dvc
    metrics show` prints them."""
    rows = []
    parts = (
        ("search", SEARCH_KEYS),
        ("search_details", SEARCH_KEYS),
        ("classifier", CLASSIFIER_KEYS),
        ("classifier_details", CLASSIFIER_KEYS),
    )
    for part, known in parts:
        keys = list(dict.fromkeys(k for d in datasets for k in _ordered(getattr(d, part), known)))
        for k in keys:
            rows.append(
                [
                    f"<code>{_e(k)}</code>",
                    f"<code>{_e(Path(datasets[0].files[part]).name)}</code>",
                    *(_e(fmt(getattr(d, part)[k])) if k in getattr(d, part) else "-" for d in datasets),
                ]
            )
    return _table(["metric", "file", *(_e(d.name) for d in datasets)], rows, numeric_from=2)


def _files_table(parts: list[tuple[dict[str, Any], str]], known: tuple[str, ...]) -> str:
    """One stage's figures, from its metrics file and its details file (`parts`: (values, path)), as rows of key,
    file and value."""
    rows = [
        [f"<code>{_e(k)}</code>", f"<code>{_e(Path(path).name)}</code>", _e(fmt(values[k]))]
        for values, path in parts
        for k in _ordered(values, known)
    ]
    return _table(["metric", "file", "value"], rows, numeric_from=2)


def _per_class_table(d: DatasetResults) -> str:
    acc = d.classifier_details.get("per_class_accuracy") or {}
    names = [c for c in d.classes if c in acc] + sorted(set(acc) - set(d.classes))
    if not names:
        return ""
    return (
        "<p>Per-class test accuracy (<code>per_class_accuracy</code> in "
        f"<code>{_e(d.files['classifier_details'])}</code>):</p>"
        + _table(["class", *(_e(c) for c in names)], [["accuracy", *(_e(fmt(acc[c])) for c in names)]])
    )


def sweep_html(s: SweepResults, name: str, files: dict[str, str]) -> str:
    """A sweep's parameter importance, parallel coordinates and best so far, each in the sweep's direction.
    `name` labels it ("mnist", "GAN sweep"); `files` gives its trials and progress_time paths."""
    ok, col = usable_trials(s), s.column
    imp = param_importances(s)
    if imp:
        imp_html = _figure(
            importance_figure(imp, col),
            f"parameter importance, {name}",
            f"Parameter importance for <code>{_e(col)}</code> ({s.goal}) over the {len(ok)} completed "
            "and pruned trials (Optuna's PED-ANOVA evaluator; hyperparameters that never varied are "
            "left out): " + ", ".join(f"<code>{_e(k)}</code> {v:.2f}" for k, v in imp.items()) + ".",
            "",
        )
    else:
        why = (
            "fewer than 2 trials succeeded"
            if len(ok) < 2
            else "no hyperparameter varied across the successful trials"
            if not param_distributions(s)
            else f"every successful trial reached the same {col}"
        )
        imp_html = f'<p class="note">No parameter importance for {_e(name)}: {_e(why)}.</p>'
    steps = new_bests(s)
    steps_html = (
        f"<p>Trials that set a new best <code>{_e(col)}</code> ({s.goal}):</p>"
        + _table(["trial", *(_e(n) for n, _ in steps)], [[_e(col), *(_e(fmt(v)) for _, v in steps)]])
        if steps
        else ""
    )
    return "\n".join(
        [
            imp_html,
            _figure(
                parallel_coordinates_figure(s),
                f"parallel coordinates, {name}",
                f"Every trial of the sweep ({len(s.trials)}), one line each, coloured by <code>{_e(col)}</code> "
                f"({s.goal}).",
                f"No parallel coordinates: no hyperparameter varied, or no trial has a {col}.",
            ),
            _figure(
                best_so_far_figure(s),
                f"best so far, {name}",
                f"<code>{_e(col)}</code> of each trial and the best so far ({s.goal}): in the order Optuna proposed "
                f"the trials (<code>{_e(files['trials'])}</code>), and by the sweep's wall time when each trial "
                f"ended (<code>{_e(files['progress_time'])}</code>).",
                f"No trial reached a {col}.",
            ),
            _cost_html(s, name, files),
            steps_html,
        ]
    )


def _cost_html(s: SweepResults, name: str, files: dict[str, str]) -> str:
    paid = spend(s)
    if paid is None:
        return ""
    unit, cost = paid
    return _figure(
        cost_figure(s),
        f"cost against {s.column}, {name}",
        f"What <code>{_e(s.column)}</code> cost: each trial against its own cost, and the best so far against the "
        f"sweep's spend, in {unit} (<code>{_e(files['trials'])}</code>: <code>train_s</code>, <code>gpu_s</code>, "
        f"<code>cost_usd</code>). The sweep's total: <strong>{cost.sum():.3g} {unit}</strong> over "
        f"{len(s.trials)} trials.",
        f"No trial reached a {s.column}.",
    )


def pareto_caption(d: DatasetResults) -> str:
    picked = next((p for p in d.pareto if p["picked"]), None)
    why = (d.classifier_details.get("picked") or {}).get("reason", "")
    what = (
        f"The Pareto front of {', '.join(d.objectives)}"
        if len(d.objectives) > 1
        else "Validation accuracy against size (the sweep optimised accuracy alone: its front is its best trial)"
    )
    return (
        f"{_e(what)} (<code>{_e(d.files['pareto'])}</code>). Picked: trial {picked['trial'] if picked else '-'}"
        f"{', ' + _e(why) if why else ''}; <code>train</code> retrained it."
    )


def dataset_section(d: DatasetResults) -> str:
    files = "".join(f"<li>{_e(role)}: <code>{_e(path)}</code></li>" for role, path in d.files.items())
    return "\n".join(
        [
            f'<h2 id="{_e(d.name)}">{_e(d.name)}</h2>',
            f"<ul>{files}</ul>",
            "<h3>Search</h3>",
            sweep_html(d.sweep, d.name, d.files),
            _figure(pareto_figure(d), f"Pareto front, {d.name}", pareto_caption(d), "No trial ran all its epochs."),
            "<h3>Classifier (test split)</h3>",
            _per_class_table(d),
            _figure(
                confusion_figure(d.confusion, d.classes),
                f"confusion matrix, {d.name}",
                f"Confusion matrix of the {len(d.confusion)} test images (<code>{_e(d.files['confusion'])}</code>).",
                "",
            ),
        ]
    )


def _gan_class_table(g: GanResults) -> str:
    """The per-class scores of gan_eval's details (`per_class`): a row per class, a column per score."""
    scores = g.details.get("per_class") or {}
    if not scores:
        return ""
    keys = [k for k in GAN_CLASS_KEYS if any(k in row for row in scores.values())]
    by = (
        "the samples drawn for the class"
        if g.details.get("per_class_by") == "requested"
        else "the samples the classifier assigns to the class"
    )
    rows = [
        [_e(name), *("" if row.get(k) is None else _e(fmt(round(row[k], 4))) for k in keys)]
        for name, row in scores.items()
    ]
    return (
        f"<p>Per class (<code>per_class</code> in <code>{_e(g.files['details'])}</code>): {by} against the real test "
        "images of the class; <code>reference_fid_train_vs_test</code> scores real train images of the class the "
        "same way. Blank: too few samples of the class to score.</p>"
        + _table(["class", *(f"<code>{_e(k)}</code>" for k in keys)], rows)
    )


def gan_section(g: GanResults) -> str:
    details = {k: v for k, v in g.details.items() if k != "per_class"}  # per_class: its own table
    table = _files_table([(g.metrics, g.files["metrics"]), (details, g.files["details"])], GAN_KEYS)
    if g.details.get("conditional"):
        by_class = (
            "By requested class, one row each: real test images (left) and the samples the class-conditional "
            "generator draws for that class (right). Class consistency (<code>class_consistency</code>): the share "
            "of them the classifier assigns to the class asked for."
        )
    else:
        by_class = (
            "By class, one row each: real test images (left) and the generated samples that the classifier assigns "
            "to that class (right; blank where it assigns fewer)."
        )
    n = len(g.real)
    files = "".join(f"<li>{_e(role)}: <code>{_e(path)}</code></li>" for role, path in g.files.items())
    return "\n".join(
        [
            f'<h2 id="gan">GAN ({_e(g.dataset)})</h2>',
            f"<ul>{files}</ul>",
            "<h3>Search</h3>",
            f"<p>The GAN sweep (<code>{_e(g.files['search'])}</code>, <code>{_e(g.files['search_details'])}</code>), "
            "which chose this GAN's architecture and learning rates by FID:</p>",
            _files_table([(g.search, g.files["search"]), (g.search_details, g.files["search_details"])], SEARCH_KEYS),
            sweep_html(g.sweep, "GAN sweep", g.files),
            "<h3>Final GAN</h3>",
            f"<p>Metrics from <code>{_e(g.files['metrics'])}</code> and <code>{_e(g.files['details'])}</code>. FID "
            f"and Inception Score use the features of the classifier trained on {_e(g.dataset)}; the "
            "<code>reference_*</code> rows score real images the same way, and <code>inception_score_ratio</code> "
            "is the Inception Score over the real test images'.</p>",
            table,
            f"<figure>{_img(g.samples_png, 'generated samples', 'pixels')}"
            f"<figcaption>Generated: <code>{_e(g.files['samples'])}</code></figcaption></figure>",
            f"<figure>{_img(image_png(g.real, 8), 'real test images', 'pixels')}"
            f"<figcaption>Real: the first {n} test images of <code>{_e(g.files['prepared'])}</code>"
            "</figcaption></figure>",
            f"<figure>{_img(g.class_png, 'real and generated images by class', 'pixels')}"
            f"<figcaption>{by_class} Class shares: <code>class_share</code> against "
            f"<code>reference_class_share_test</code> in <code>{_e(g.files['details'])}</code>.</figcaption></figure>",
            _gan_class_table(g),
            _figure(
                val_fid_figure(g),
                "validation FID by epoch",
                f"Validation FID of each scored epoch (<code>{_e(g.files['log'])}</code>); the gan stage keeps the "
                "circled epoch.",
                "No scored epochs in the GAN's log.",
            ),
        ]
    )


def render_report(
    datasets: list[DatasetResults], gan: GanResults, *, commit: str, experiment: str | None = None
) -> str:
    """The whole page as one HTML string (ASCII: non-ASCII characters become character references)."""
    versions = {d.name: (d.files["prepared"], d.content_hash) for d in datasets}
    versions.setdefault(gan.dataset, (gan.files["prepared"], gan.content_hash))
    prov = [["git commit (when this page was made)", f'<span class="mono">{_e(commit)}</span>']]
    if experiment:
        prov.append(["DVC experiment", f'<span class="mono">{_e(experiment)}</span>'])
    prov += [
        [f"data version: {_e(name)}", f'<span class="mono">{_e(h)}</span> (<code>{_e(p)}</code>)']
        for name, (p, h) in versions.items()
    ]
    toc = " &middot; ".join(f'<a href="#{_e(d.name)}">{_e(d.name)}</a>' for d in datasets)
    body = "\n".join(
        [
            "<h1>grutune report</h1>",
            f'<p>{toc} &middot; <a href="#gan">GAN</a></p>',
            _table([], prov, numeric_from=99),
            "<h2>Metrics</h2>",
            "<p>Numbers are printed as <code>dvc metrics show</code> prints them (rounded to 5 decimal places).</p>",
            metrics_table(datasets),
            *(dataset_section(d) for d in datasets),
            gan_section(gan),
        ]
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>grutune report</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")
