"""File readers and writers (nibabel, tifffile, numpy); no Qt."""

from .layers import KINDS, SUFFIXES, guess_kind, read_layers
from .nifti import read_nifti, read_nifti_probabilities

__all__ = ["KINDS", "SUFFIXES", "guess_kind", "read_layers", "read_nifti", "read_nifti_probabilities"]
