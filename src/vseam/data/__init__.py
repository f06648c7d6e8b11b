"""Data: the one sample type, benchmark readers, edit manifests and the Lightning DataModule."""

from vseam.data.sample import EditRecord, MissingImageError, Sample, load_image

__all__ = ["Sample", "EditRecord", "MissingImageError", "load_image"]
