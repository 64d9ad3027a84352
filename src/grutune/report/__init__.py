"""The `report` stage's library: one self-contained HTML page of every sweep, classifier and GAN.

`inputs` reads the stages' files into typed results, `analysis` draws a sweep's numbers from them (best so far,
spend, parameter importance), `figures` draws the plots and `html` writes the page.
"""

from grutune.report.html import render_report
from grutune.report.inputs import DATASET_FILES, GAN_FILES, load_dataset_results, load_gan_results

__all__ = ["DATASET_FILES", "GAN_FILES", "load_dataset_results", "load_gan_results", "render_report"]
