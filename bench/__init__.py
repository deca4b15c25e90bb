"""segrobust-bench: adversarial robustness of semantic segmentation, one command away."""

__version__ = "0.1.0"
