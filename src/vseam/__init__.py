"""vseam: causal interpretability of vision-language models (V-SEAM) on PyTorch Lightning."""

__version__ = "0.1.0"
