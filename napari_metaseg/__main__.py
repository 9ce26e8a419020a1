"""``python -m napari_metaseg``: napari on the 3D brain sample with the MetaSeg dock, run."""

from __future__ import annotations

import argparse

from ._layers import axial_view


def populate_demo(viewer, *, sample="brain3d", run=True):
    """Open a sample, dock the MetaSeg dock (Analyse tab) and (by default) start the analysis.

    Returns the analysis panel; its ``worker`` is running when ``run`` is true.
    """
    viewer.open_sample("napari-metaseg", sample)
    if sample == "brain3d":
        axial_view(viewer)
        z_axis = viewer.dims.ndim - 1
        lo, hi = viewer.dims.range[z_axis][:2]
        viewer.dims.set_point(z_axis, lo + 0.55 * (hi - lo))
    _, dock = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg")
    widget = dock.analysis
    # slice-wise along z for the brain, as in the published BraTS evaluation and as the axial
    # view shows it; plain 2D for the nuclei image
    widget.form.mode.value = "slices" if sample == "brain3d" else "auto"
    widget.form.slice_axis.value = -1
    if run:
        widget.run()
    return widget


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m napari_metaseg", description=__doc__)
    parser.add_argument("--sample", choices=("brain3d", "nuclei2d"), default="brain3d",
                        help="sample to open (default: the 3D brain)")
    parser.add_argument("--no-run", action="store_true", help="dock the panel without running it")
    args = parser.parse_args(argv)
    import napari

    viewer = napari.Viewer(title="napari-metaseg")
    populate_demo(viewer, sample=args.sample, run=not args.no_run)
    napari.run()


if __name__ == "__main__":
    main()
