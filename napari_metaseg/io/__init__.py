"""File readers and writers (nibabel, tifffile, numpy); no Qt."""

from .nifti import read_nifti, read_nifti_probabilities

__all__ = ["read_nifti", "read_nifti_probabilities"]
