"""The report's plots (grutune.report.figures) drawn from inputs in the stages' real formats."""

from grutune.report.figures import val_fid_figure
from report_fixtures import load, write_inputs


def test_the_validation_fid_curve_circles_the_kept_epoch(tmp_path):
    """The kept epoch (here epoch 3, not the curve's lowest) is circled and named in the legend."""
    write_inputs(tmp_path)
    _, gan = load(tmp_path)
    labels = [t.get_text() for t in val_fid_figure(gan).axes[0].get_legend().get_texts()]
    assert labels == ["validation FID", "kept: epoch 3"]
