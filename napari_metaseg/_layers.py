"""napari-side helpers shared by the demo and the widgets: results as layers, quality colours."""

from __future__ import annotations

import numpy as np

from .core.colors import quality_rgba

#: Columns a segments layer can be coloured by, best first, with whether high means bad.
QUALITY_COLUMNS = (("iou_adj_pred", False), ("p_iou0", True), ("iou_adj", False), ("E", True))
_COLUMN_TITLES = {
    "iou_adj_pred": "predicted IoU_adj (meta model)",
    "p_iou0": "P(IoU_adj = 0) (meta classifier)",
    "iou_adj": "true IoU_adj (ground truth)",
    "E": "1 - mean entropy (no GT, no model)",
}


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` is
    deprecated there), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def axial_view(viewer, *, radiological=True):
    """Show axial slices of a RAS+ volume: z (inferior -> superior) on the slider, anterior up.

    Radiological convention by default (as in the reading room): the patient's right on the
    screen's left, said by a marker on the canvas; ``radiological=False`` gives the neurological
    one (right on the right). The readers reorient NIfTI volumes to RAS+, so the last spatial
    axis is the axial one.
    """
    nd = viewer.dims.ndim
    if nd < 3:
        return
    viewer.dims.order = (*range(nd - 3), nd - 1, nd - 2, nd - 3)
    camera(viewer).orientation2d = ("up", "left" if radiological else "right")
    text = text_overlay(viewer)
    text.text = ("R | L   radiological view (patient's right on the left)" if radiological
                 else "L | R   neurological view (patient's right on the right)")
    text.position = "top_center"
    text.font_size = 10
    text.visible = True


def text_overlay(viewer):
    """The canvas text overlay: ``viewer.canvas.overlays.text`` from napari 0.9 on
    (``viewer.text_overlay`` is deprecated there)."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "overlays"):
        return canvas.overlays.text
    return viewer.text_overlay


def centre_on_mask(viewer, layer, mask):
    """Move the camera (and the sliders of the axes not shown) to the voxels ``mask`` of ``layer``:
    to the voxel nearest their centroid, so the slice shown holds some of them even when they curve."""
    coords = np.argwhere(mask)
    if not len(coords):
        return
    centroid = coords.mean(axis=0)
    point = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))].astype(float)
    world = np.asarray(layer.data_to_world(point))
    world_c = np.asarray(layer.data_to_world(centroid))
    offset = viewer.dims.ndim - layer.ndim
    displayed = viewer.dims.displayed
    for ax in range(layer.ndim):
        if ax + offset not in displayed:
            viewer.dims.set_point(ax + offset, world[ax])
    camera(viewer).center = tuple(world_c[ax - offset] if ax >= offset else 0.0 for ax in displayed)


def input_layers(viewer):
    """The layers a panel may take as inputs: ``(probability layers, label layers)``; the labels
    are the Labels layers that are not results of ours (ground truth, annotations), in layer order."""
    from napari.layers import Image, Labels

    layers = list(viewer.layers)
    probs = [la for la in layers
             if isinstance(la, Image) and la.metadata.get("metaseg", {}).get("kind") == "probabilities"]
    labels = [la for la in layers
              if isinstance(la, Labels) and not la.metadata.get("metaseg", {}).get("result")]
    return probs, labels


def spatial_kwargs(layer, class_axis):
    """``scale``, ``translate`` (and ``units``) of a probability layer's spatial axes (all but
    ``class_axis``): what a result layer of the same case needs to lie on it."""
    axis = class_axis % layer.ndim
    spatial = [i for i in range(layer.ndim) if i != axis]
    out = {"scale": tuple(np.asarray(layer.scale)[spatial]),
           "translate": tuple(np.asarray(layer.translate)[spatial])}
    units = getattr(layer, "units", None)
    if units is not None:
        out["units"] = tuple(units[i] for i in spatial)
    return out


def go_to_slice(viewer, layer, axis, index) -> bool:
    """Move the viewer's slider of ``layer``'s data axis ``axis`` to slice ``index`` (the view, e.g.
    the radiological axial one, stays). False when that axis is shown across the canvas."""
    point = np.zeros(layer.ndim)
    point[axis] = index
    world = np.asarray(layer.data_to_world(point))[axis]
    dim = viewer.dims.ndim - layer.ndim + axis
    if dim in viewer.dims.displayed:
        return False
    viewer.dims.set_point(dim, world)
    return True


def case_id_of(layer):
    """The case a layer shows: from its file (see :func:`napari_metaseg.io.cases.case_id_from_path`),
    else its name without ``softmax`` / ``probabilities``."""
    from .io.cases import case_id_from_path

    source = layer.metadata.get("source") or getattr(getattr(layer, "source", None), "path", None)
    if source:
        return case_id_from_path(source)
    name = layer.name
    for word in (" softmax", " probabilities", "_softmax", " ground truth", "_gt"):
        name = name.replace(word, "")
    return name.strip() or "current"


def quality_column(table):
    """The column the overlay uses: predicted IoU_adj, else true IoU_adj, else entropy (reversed).

    Returns ``(column, reverse, title)``.
    """
    for col, reverse in QUALITY_COLUMNS:
        if col in table.columns and table[col].notna().any():
            return col, reverse, _COLUMN_TITLES[col]
    raise ValueError(f"table has none of the quality columns {[c for c, _ in QUALITY_COLUMNS]}")


#: Columns whose natural range is [0, 1] (shown on that scale, never stretched).
UNIT_COLUMNS = {"iou", "iou_adj", "iou_adj_pred", "p_iou0", "E", "D", "V", "E_in", "D_in", "V_in",
                "E_bd", "D_bd", "V_bd", "MI", "VAR"}
#: Quantiles that bound the colour scale of any other column (robust to one huge segment).
SCALE_QUANTILES = (2.0, 98.0)


def color_scale(table, column, *, hide_classes=()):
    """``(lo, hi)``: the values of ``column`` mapped to the two ends of the colour ramp.

    Quality columns and columns that lie in [0, 1] keep their natural range [0, 1]; others
    (sizes, ratios) span the 2nd to 98th percentile of the segments shown (classes in
    ``hide_classes``, e.g. the background, left out), so one huge background segment does not
    squash every other segment into one colour.
    """
    values = table[column].to_numpy(dtype=np.float64)
    if len(hide_classes) and "class" in table.columns:
        values = values[~table["class"].isin(list(hide_classes)).to_numpy()]
    values = values[np.isfinite(values)]
    if column in UNIT_COLUMNS or not values.size or (values.min() >= 0 and values.max() <= 1):
        return 0.0, 1.0
    lo, hi = np.percentile(values, SCALE_QUANTILES)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def segment_colors(table, column, *, reverse=False, alpha=0.7, hide_classes=(), min_interior=0,
                   value_range=(0.0, 1.0)):
    """RGBA per row of ``table`` by ``table[column]`` on the quality ramp (worst to best).

    ``value_range`` is mapped onto the ramp (see :func:`color_scale`); ``reverse`` is for columns
    where high means bad. Segments of ``hide_classes`` are transparent; segments with fewer than
    ``min_interior`` interior pixels are not rated (dark grey).
    """
    lo, hi = value_range
    values = (table[column].to_numpy(dtype=np.float64) - lo) / (hi - lo)
    if reverse:
        values = 1.0 - values
    if min_interior > 0 and "S_in" in table.columns:
        values = np.where(table["S_in"].to_numpy() < min_interior, np.nan, values)
    rgba = quality_rgba(values, alpha=alpha)
    if len(hide_classes):
        rgba[table["class"].isin(list(hide_classes)).to_numpy(), 3] = 0.0
    return rgba


def segment_colormap(table, column, *, reverse=False, alpha=0.7, hide_classes=(), min_interior=0,
                     value_range=(0.0, 1.0)):
    """A ``DirectLabelColormap`` colouring each segment id of ``table`` by ``table[column]``.

    Label 0, ids not in the table and segments of ``hide_classes`` are transparent; see
    :func:`segment_colors` for the other options.
    """
    from napari.utils.colormaps import DirectLabelColormap

    rgba = segment_colors(table, column, reverse=reverse, alpha=alpha, hide_classes=hide_classes,
                          min_interior=min_interior, value_range=value_range)
    color_dict = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    color_dict.update(zip(table["index"].to_numpy().tolist(), rgba, strict=True))
    return DirectLabelColormap(color_dict=color_dict)


def color_segments(layer, column=None, *, reverse=None, hide_classes=None, min_interior=None,
                   colormap=None):
    """Colour a segments Labels layer by ``column`` of its features (None: :func:`quality_column`)
    and record what is shown (column, title, range, direction) in ``layer.metadata["metaseg"]``,
    where the canvas legend reads it. Options default to those recorded before. ``colormap``:
    one already built (in a worker) for exactly these settings. Returns the column used.
    """
    meta = layer.metadata.setdefault("metaseg", {})
    if hide_classes is None:
        hide_classes = tuple(meta.get("hide_classes", ()))
    if min_interior is None:
        min_interior = int(meta.get("min_interior", 0))
    table = layer.features
    if column is None:
        column, reverse, title = quality_column(table)
    else:
        title = _COLUMN_TITLES.get(column, column)
        reverse = bool(reverse) if reverse is not None else dict(QUALITY_COLUMNS).get(column, False)
    value_range = color_scale(table, column, hide_classes=hide_classes)
    # the record first: the legend listens to the colormap change and reads it
    meta.update(color_by=column, color_title=title, color_range=list(value_range), color_reverse=reverse,
                hide_classes=list(hide_classes), min_interior=int(min_interior))
    if colormap is None:
        colormap = segment_colormap(table, column, reverse=reverse, hide_classes=hide_classes,
                                    min_interior=min_interior, value_range=value_range)
    layer.colormap = colormap
    return column


def recolor(layer, *, hide_classes=None, min_interior=None):
    """Recolour a segments Labels layer by :func:`quality_column` (see :func:`color_segments`)."""
    return color_segments(layer, hide_classes=hide_classes, min_interior=min_interior)


def recolor_with(layer, table):
    """Give ``layer`` a new features table (e.g. with predictions; shown with :func:`display_table`)
    and recolour it: the colours follow the quality column, so a new prediction shows at once."""
    names = layer.metadata.get("metaseg", {}).get("class_names")
    layer.features = display_table(table, names)
    recolor(layer)


#: Columns shown first (hover text, segment table): what a reviewer needs, then the features.
FIRST_COLUMNS = ("index", "class_name", "iou_adj_pred", "iou_adj", "p_iou0", "S", "slice")


def class_names_for(n_classes, names=None):
    """``names`` (from the data or a setting) completed to ``n_classes`` with ``class k``."""
    names = [str(n) for n in (names or [])][:n_classes]
    return names + [f"class {k}" for k in range(len(names), n_classes)]


def display_table(table, class_names=None):
    """The metrics table as a segments layer carries it: a ``class_name`` column and the columns
    a reviewer reads first in front (hover text and table follow this order). The meta models
    ignore the order and the name column (``workflows.clean_table`` restores the engine's)."""
    out = table.drop(columns=["class_name"], errors="ignore")
    if "class" in out.columns:
        n = int(out["class"].max()) + 1 if len(out) else 0
        names = np.array(class_names_for(max(n, len(class_names or [])), class_names), dtype=object)
        import pandas as pd

        values = names[out["class"].to_numpy(np.int64)] if len(out) else []
        out.insert(0, "class_name", pd.Series(values, index=out.index, dtype=object))
    first = [c for c in FIRST_COLUMNS if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]


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


def texture_ids(seg):
    """Segment ids as uint8 when they all fit (at most 255 segments; the values stay the same).

    napari draws uint8 labels through a 256-entry lookup of the colormap; wider ids first go
    through a per-colormap mapping (a numba typed dict of every segment) on every refresh of the
    slice and of the thumbnail: 35 ms of the main thread per run on the brain sample in 3D mode
    (149 segments). uint16 would not help: napari then maps all 65536 possible ids per colormap.
    """
    seg = np.asarray(seg)
    if seg.dtype.kind in "iu" and seg.dtype.itemsize > 1 and seg.size:
        lo, hi = int(seg.min()), int(seg.max())
        if 0 <= lo and hi <= np.iinfo(np.uint8).max:
            return seg.astype(np.uint8)
    return seg


def add_results(viewer, maps, seg, table, *, color_by=None, scale=None, translate=None, reverse=False,
                hide_classes=(), min_interior=0, colormap=None, class_names=None):
    """Add heatmap Image layers and a ``segments`` Labels layer carrying the metrics table.

    ``color_by=None`` picks the column with :func:`quality_column`; ``colormap`` (made by
    :func:`segment_colormap` for that column, e.g. in a worker thread) is used as given. The table
    gets a ``class_name`` column from ``class_names`` (``class k`` where unknown) and the
    reviewer's columns first (:func:`display_table`); up to 255 segments, their ids are stored as
    uint8 (:func:`texture_ids`). Result layers of the same
    names from an earlier run are updated in place (or replaced when their shape differs).
    """
    kwargs = _kwargs(scale, translate)
    layers = []
    for name, heat in maps.items():
        layer = _reusable(viewer, f"heatmap {name}", heat, kwargs)
        if layer is not None:
            layer.data = heat
        else:
            # rgb=False: a volume of 3 or 4 slices along its last axis is not an RGB(A) image
            layer = viewer.add_image(heat, name=f"heatmap {name}", colormap="inferno", rgb=False,
                                     contrast_limits=(0.0, 1.0), blending="additive", visible=False,
                                     metadata={"metaseg": {"kind": "heatmap", "result": True}}, **kwargs)
        layers.append(layer)
    table = display_table(table, class_names)
    seg = texture_ids(seg)
    seg_layer = _reusable(viewer, "segments", seg, kwargs)
    if seg_layer is not None:
        seg_layer.data = seg
        seg_layer.features = table
    else:
        seg_layer = viewer.add_labels(seg, name="segments", features=table, opacity=0.7,
                                      metadata={"metaseg": {"kind": "segments", "result": True}},
                                      **kwargs)
    seg_layer.metadata["metaseg"]["class_names"] = list(class_names or [])
    if colormap is not None:  # built in the worker for the quality column
        color_segments(seg_layer, hide_classes=hide_classes, min_interior=min_interior, colormap=colormap)
    else:
        color_segments(seg_layer, color_by, reverse=reverse if color_by else None, hide_classes=hide_classes,
                       min_interior=min_interior)
    layers.append(seg_layer)
    return layers


#: (labels dtype, texture dtype) pairs whose napari label-to-texture mapping the main thread has
#: built at least once (so numba has compiled its typed-dict code outside any worker).
_TEXTURE_MAPPINGS_BUILT: set = set()


def _texture_mapping_key(cmap, dtype):
    from napari.utils.colormaps import _accelerated_cmap

    target = _accelerated_cmap.minimum_dtype_for_labels(cmap._num_unique_colors + 2)
    return np.dtype(dtype).name, np.dtype(target).name


def prepare_texture_mapping(cmap, dtype):
    """Build, now (in a worker thread), the mapping from label ids of ``dtype`` to texture values
    that napari (0.9) builds on the main thread the first time a ``DirectLabelColormap`` draws
    labels wider than 16 bits: a numba typed dict with one entry per segment, 16 ms for the brain
    sample's 3916 segments. Done only for kinds of mapping the main thread has built before
    (:func:`note_texture_mapping`), so that numba never compiles in a worker; napari's private
    helpers are used, and anything unexpected leaves the work to napari as before."""
    if np.dtype(dtype).itemsize <= 2:
        return  # 8- and 16-bit labels are drawn without this mapping
    try:
        if _texture_mapping_key(cmap, dtype) in _TEXTURE_MAPPINGS_BUILT:
            cmap._get_typed_dict_mapping(np.dtype(dtype))
    except Exception:  # an optimisation only: napari builds the mapping when it draws
        pass


def note_texture_mapping(cmap, dtype):
    """Record (main thread, after drawing with ``cmap``) that this kind of mapping is compiled:
    when ``cmap`` holds one for ``dtype`` (a hidden layer draws nothing, so builds none)."""
    if np.dtype(dtype).itemsize <= 2:
        return
    try:
        if f"_{np.dtype(dtype)}_typed_dict" in cmap._cache_other:
            _TEXTURE_MAPPINGS_BUILT.add(_texture_mapping_key(cmap, dtype))
    except Exception:  # see prepare_texture_mapping
        pass


#: Colour of the flagged-voxel contours: white. Measured in CAM02-UCS with colorspacious
#: (``tests/test_gui_quality.py``), it stays at least 21 units from every colour of the quality
#: ramp under normal vision, deuteranopia and protanopia (16 under tritanopia, by the ramp's
#: middle) and 77 from the dark grey of unrated segments. Black lies farther from the ramp (52)
#: but only 23 from that grey, and flagged single voxels then looked like unrated specks; no
#: colour lies more than 25 units from both the ramp and the grey under every simulation.
FLAG_RGB = (1.0, 1.0, 1.0)
#: Contour width of the flagged voxels, in voxels.
FLAG_CONTOUR = 1


def show_flags(viewer, flags, name, *, metadata=None, **kwargs):
    """Show a boolean map of flagged voxels as the Labels layer ``name`` drawn as contours
    (:data:`FLAG_RGB`, :data:`FLAG_CONTOUR`); an earlier layer of that name is updated in place
    when it can take the map, else replaced. ``kwargs``: ``scale``, ``translate``, ``units``."""
    from napari.utils.colormaps import DirectLabelColormap

    data = np.asarray(flags, dtype=np.uint8)
    meta = {"metaseg": {"kind": "flagged_voxels", "result": True, **(metadata or {})}}
    cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (*FLAG_RGB, 1.0)})
    layer = _reusable(viewer, name, data, {k: v for k, v in kwargs.items() if k in ("scale", "translate")})
    if layer is not None:
        layer.data = data
        layer.metadata = meta
        layer.colormap = cmap
    else:
        layer = viewer.add_labels(data, name=name, opacity=1.0, colormap=cmap, metadata=meta, **kwargs)
    layer.contour = FLAG_CONTOUR
    return layer
