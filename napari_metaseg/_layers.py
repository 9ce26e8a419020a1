"""napari-side helpers shared by the demo and the widgets: results as layers, quality colours."""

from __future__ import annotations

import numpy as np

from .core.colors import quality_rgba

#: Columns a segments layer can be coloured by, best first, with whether high means bad.
QUALITY_COLUMNS = (("iou_adj_pred", False), ("p_iou0", True), ("iou_adj", False), ("E", True))
_COLUMN_TITLES = {
    "iou_adj_pred": "predicted IoU_adj (meta model)",
    "p_iou0": "P(IoU_adj > 0) (meta classifier)",
    "iou_adj": "true IoU_adj (ground truth)",
    "E": "1 - mean entropy (no GT, no model)",
}


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` is
    deprecated there), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def quality_column(table):
    """The column the overlay uses: predicted IoU_adj, else true IoU_adj, else entropy (reversed).

    Returns ``(column, reverse, title)``.
    """
    for col, reverse in QUALITY_COLUMNS:
        if col in table.columns and table[col].notna().any():
            return col, reverse, _COLUMN_TITLES[col]
    raise ValueError(f"table has none of the quality columns {[c for c, _ in QUALITY_COLUMNS]}")


def segment_colors(table, column, *, reverse=False, alpha=0.7, hide_classes=(), min_interior=0):
    """RGBA per row of ``table``: red-to-green by ``table[column]``.

    Segments of ``hide_classes`` are transparent; segments with fewer than ``min_interior``
    interior pixels are grey (not rated).
    """
    values = table[column].to_numpy(dtype=np.float64)
    if reverse:
        values = 1.0 - values
    if min_interior > 0 and "S_in" in table.columns:
        values = np.where(table["S_in"].to_numpy() < min_interior, np.nan, values)
    rgba = quality_rgba(values, alpha=alpha)
    if len(hide_classes):
        rgba[table["class"].isin(list(hide_classes)).to_numpy(), 3] = 0.0
    return rgba


def segment_colormap(table, column, *, reverse=False, alpha=0.7, hide_classes=(), min_interior=0):
    """A ``DirectLabelColormap`` colouring each segment id of ``table`` by ``table[column]``.

    ``reverse=True`` is for columns where high means bad (e.g. mean entropy ``E``).
    Label 0, ids not in the table and segments of ``hide_classes`` are transparent.
    """
    from napari.utils.colormaps import DirectLabelColormap

    rgba = segment_colors(table, column, reverse=reverse, alpha=alpha, hide_classes=hide_classes,
                          min_interior=min_interior)
    color_dict = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    color_dict.update(zip(table["index"].to_numpy().tolist(), rgba, strict=True))
    return DirectLabelColormap(color_dict=color_dict)


def recolor(layer, *, hide_classes=None, min_interior=None):
    """Recolour a segments Labels layer from its ``features`` by :func:`quality_column`.

    Options default to those stored in ``layer.metadata["metaseg"]`` by :func:`add_results`.
    Returns the column used.
    """
    meta = layer.metadata.setdefault("metaseg", {})
    if hide_classes is None:
        hide_classes = tuple(meta.get("hide_classes", ()))
    if min_interior is None:
        min_interior = int(meta.get("min_interior", 0))
    table = layer.features
    column, reverse, title = quality_column(table)
    layer.colormap = segment_colormap(table, column, reverse=reverse, hide_classes=hide_classes,
                                      min_interior=min_interior)
    meta.update(color_by=column, color_title=title, hide_classes=list(hide_classes),
                min_interior=int(min_interior))
    return column


def _kwargs(scale, translate):
    kwargs = {}
    if scale is not None:
        kwargs["scale"] = tuple(scale)
    if translate is not None:
        kwargs["translate"] = tuple(translate)
    return kwargs


def _reusable(viewer, name, data, kwargs):
    """An earlier result layer called ``name`` that can take ``data`` in place, else None.

    Updating in place is much cheaper on the main thread than removing and re-adding a layer
    (napari rebuilds the scene graph and runs a garbage collection on removal).
    """
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    meta = layer.metadata.get("metaseg", {})
    if not meta.get("result") or layer.data.shape != data.shape or layer.data.dtype != data.dtype:
        if meta.get("result"):
            viewer.layers.remove(layer)
        return None
    for key, value in kwargs.items():
        if not np.allclose(getattr(layer, key), value):
            viewer.layers.remove(layer)
            return None
    return layer


def add_results(viewer, maps, seg, table, *, color_by=None, scale=None, translate=None, reverse=False,
                hide_classes=(), min_interior=0, colormap=None):
    """Add heatmap Image layers and a ``segments`` Labels layer carrying the metrics table.

    ``color_by=None`` picks the column with :func:`quality_column`; ``colormap`` (made by
    :func:`segment_colormap`, e.g. in a worker thread) is used as given. Result layers of the same
    names from an earlier run are updated in place (or replaced when their shape differs).
    """
    kwargs = _kwargs(scale, translate)
    layers = []
    for name, heat in maps.items():
        layer = _reusable(viewer, f"heatmap {name}", heat, kwargs)
        if layer is not None:
            layer.data = heat
        else:
            layer = viewer.add_image(heat, name=f"heatmap {name}", colormap="inferno",
                                     contrast_limits=(0.0, 1.0), blending="additive", visible=False,
                                     metadata={"metaseg": {"kind": "heatmap", "result": True}}, **kwargs)
        layers.append(layer)
    seg_layer = _reusable(viewer, "segments", seg, kwargs)
    if seg_layer is not None:
        seg_layer.data = seg
        seg_layer.features = table
    else:
        seg_layer = viewer.add_labels(seg, name="segments", features=table, opacity=0.7,
                                      metadata={"metaseg": {"kind": "segments", "result": True}},
                                      **kwargs)
    if colormap is not None:
        column, _, title = quality_column(table)
        seg_layer.colormap = colormap
        seg_layer.metadata["metaseg"].update(color_by=column, color_title=title,
                                             hide_classes=list(hide_classes),
                                             min_interior=int(min_interior))
    elif color_by is None:
        recolor(seg_layer, hide_classes=hide_classes, min_interior=min_interior)
    else:
        seg_layer.colormap = segment_colormap(table, color_by, reverse=reverse, hide_classes=hide_classes,
                                              min_interior=min_interior)
        seg_layer.metadata["metaseg"].update(color_by=color_by, color_title=color_by,
                                             hide_classes=list(hide_classes), min_interior=min_interior)
    layers.append(seg_layer)
    return layers
