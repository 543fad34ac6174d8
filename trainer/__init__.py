"""Training side of the project: cohorts, preprocessing caches, training, evaluation and export.

``trainer`` may use PyTorch; the bedside runtime (``bedside``, ``devices``) never imports it. The
cohort modules (labels, synth, mimic, pairing, prepare, cache) need only numpy, pandas, wfdb and
Pillow, so preparing a cache does not import torch.
"""
