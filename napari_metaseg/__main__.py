"""``python -m napari_metaseg``: napari on the nuclei sample with heatmaps and scored segments."""

from __future__ import annotations

import argparse


def populate_demo(viewer):
    """Open the nuclei sample in ``viewer`` and add heatmaps and segments coloured by IoU_adj.

    Background segments (class 0) stay transparent so the nuclei's colours are what one sees.
    """
    from ._layers import add_results
    from ._sample_data import load_nuclei_arrays
    from .core import dispersion_maps, segment_metrics

    viewer.open_sample("napari-metaseg", "nuclei2d")
    _, probs, gt = load_nuclei_arrays()
    maps = dispersion_maps(probs)
    seg, table = segment_metrics(probs, gt)
    return add_results(viewer, maps, seg, table, color_by="iou_adj", hide_classes=(0,))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m napari_metaseg", description=__doc__)
    parser.parse_args(argv)
    import napari

    viewer = napari.Viewer(title="napari-metaseg")
    populate_demo(viewer)
    napari.run()


if __name__ == "__main__":
    main()
