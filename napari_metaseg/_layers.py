"""napari-side helpers shared by the demo and the widgets: results as layers."""

from __future__ import annotations

import numpy as np

from .core.colors import quality_rgba


def segment_colormap(table, column, *, reverse=False, alpha=0.7, hide_classes=()):
    """A ``DirectLabelColormap`` colouring each segment id of ``table`` by ``table[column]``.

    ``reverse=True`` is for columns where high means bad (e.g. mean entropy ``E``).
    Label 0, ids not in the table and segments of ``hide_classes`` are transparent.
    """
    from napari.utils.colormaps import DirectLabelColormap

    values = table[column].to_numpy(dtype=np.float64)
    if reverse:
        values = 1.0 - values
    rgba = quality_rgba(values, alpha=alpha)
    if len(hide_classes):
        rgba[table["class"].isin(list(hide_classes)).to_numpy(), 3] = 0.0
    color_dict = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    color_dict.update(zip(table["index"].to_numpy().tolist(), rgba, strict=True))
    return DirectLabelColormap(color_dict=color_dict)


def add_results(viewer, maps, seg, table, *, color_by, scale=None, translate=None, reverse=False,
                hide_classes=()):
    """Add heatmap Image layers and a ``segments`` Labels layer carrying the metrics table."""
    kwargs = {}
    if scale is not None:
        kwargs["scale"] = scale
    if translate is not None:
        kwargs["translate"] = translate
    layers = []
    for i, (name, heat) in enumerate(maps.items()):
        layers.append(
            viewer.add_image(heat, name=f"heatmap {name}", colormap="inferno",
                             contrast_limits=(0.0, 1.0), blending="additive", visible=i == 0,
                             **kwargs)
        )
    seg_layer = viewer.add_labels(seg, name="segments", features=table, opacity=0.7, **kwargs)
    seg_layer.colormap = segment_colormap(table, color_by, reverse=reverse, hide_classes=hide_classes)
    layers.append(seg_layer)
    return layers
