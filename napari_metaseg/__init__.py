"""napari-metaseg: which parts of a segmentation to distrust.

The numerical engine lives in :mod:`napari_metaseg.core` (no Qt, no napari);
the napari contributions (readers, sample data, widgets) are thin layers over it.
"""

__version__ = "0.1.0.dev0"
