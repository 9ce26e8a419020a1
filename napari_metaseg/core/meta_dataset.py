"""Collections of segment-metric tables from many cases, ready for meta-model training.

A *case* is whatever one call of :func:`napari_metaseg.core.segment_metrics` was run on: an image,
a volume (3D segments) or a volume segmented slice by slice. :class:`MetaDataset` stacks the
tables of many cases under a ``case`` column so that evaluation can keep the segments of one
case on one side of a split. :func:`feature_columns` is the single place that decides which
columns of a table a meta model sees.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..names import IMAGE_SCORE_COLUMNS, OOD_COLUMNS, PREDICTION_COLUMNS
from .atomic import atomic_path

__all__ = [
    "NON_FEATURE_COLUMNS",
    "PREDICTION_COLUMNS",
    "SIZE_COLUMNS",
    "TARGET_COLUMNS",
    "MetaDataset",
    "feature_columns",
    "synthetic_metrics_table",
    "training_rows",
]

#: Ground-truth columns of a metrics table: targets, never features.
TARGET_COLUMNS = ("iou", "iou_adj")
#: Columns that are never features: identifiers, the class id, targets and predictions, and the
#: image scores broadcast to the segments (the image-level regressor's targets). The
#: class id is a label, not a quantity (its number means nothing to a linear model); the class
#: enters through the ``cprob*`` columns, as in the reference implementation.
NON_FEATURE_COLUMNS = ("index", "case", "slice", "class", *TARGET_COLUMNS, *PREDICTION_COLUMNS,
                       *OOD_COLUMNS, *IMAGE_SCORE_COLUMNS)
#: Size columns: heavy-tailed (a background segment can hold millions of voxels next to
#: one-voxel specks), so the meta models see them on a log scale by default.
SIZE_COLUMNS = ("S", "S_in", "S_bd", "S_rel", "S_rel_in")


def feature_columns(table: pd.DataFrame) -> list:
    """Names of the metric columns of a table that a meta model uses as features.

    Every numeric (or boolean) column is a feature except the identifiers ``index``, ``case``
    and ``slice``, the class id ``class`` (the class enters through the ``cprob*`` columns, as
    in the reference implementation), the ground-truth columns ``iou`` and ``iou_adj``, the
    image scores ``image_mean_iou`` and ``image_mean_dice`` and the
    prediction columns ``p_iou0`` and ``iou_adj_pred``. Non-numeric columns (file names, notes)
    are skipped. The order is the table's column order.

    Parameters
    ----------
    table : pandas.DataFrame
        A metrics table as returned by :func:`napari_metaseg.core.segment_metrics`, possibly
        with a ``case`` column and prediction columns.

    Returns
    -------
    list
        Column names, in table order.

    Raises
    ------
    TypeError
        If ``table`` is not a pandas DataFrame.

    Example
    -------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"index": [1], "class": [0], "S": [4], "E": [0.1], "iou_adj": [0.5]})
    >>> feature_columns(t)
    ['S', 'E']
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    excluded = set(NON_FEATURE_COLUMNS)
    out = []
    for name, dtype in table.dtypes.items():
        if isinstance(name, str) and name in excluded:
            continue
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            out.append(name)
    return out


def training_rows(table: pd.DataFrame, *, min_interior: int = 1) -> np.ndarray:
    """Boolean mask of the rows of a table that may be used to train or evaluate a meta model.

    A row is usable when its ``iou_adj`` is finite (a segment lying entirely on ignored pixels
    has NaN there) and, when ``min_interior`` > 0, its interior size ``S_in`` is at least
    ``min_interior`` (segments with an empty interior are left out, as in the paper).

    Parameters
    ----------
    table : pandas.DataFrame
        Metrics table with an ``iou_adj`` column (and ``S_in`` when ``min_interior`` > 0).
    min_interior : int, default 1
        Smallest interior size ``S_in`` kept; 0 keeps every segment.

    Returns
    -------
    numpy.ndarray of bool
        One entry per row.

    Raises
    ------
    ValueError
        If ``iou_adj`` is missing (the table has no ground truth), ``S_in`` is missing while
        ``min_interior`` > 0, or ``min_interior`` is negative.

    Example
    -------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"S_in": [0, 3, 5], "iou_adj": [0.2, float("nan"), 0.0]})
    >>> training_rows(t).tolist()
    [False, False, True]
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    min_interior = _check_min_interior(min_interior)
    if "iou_adj" not in table.columns:
        raise ValueError(
            "table has no 'iou_adj' column: meta models are trained and evaluated on tables "
            "computed with ground truth (segment_metrics(..., gt=...))"
        )
    keep = np.isfinite(table["iou_adj"].to_numpy(dtype=float, na_value=np.nan))
    if min_interior > 0:
        if "S_in" not in table.columns:
            raise ValueError(
                f"table has no 'S_in' column, needed for min_interior={min_interior}; "
                "pass min_interior=0 to keep every segment"
            )
        keep &= table["S_in"].to_numpy(dtype=float, na_value=np.nan) >= min_interior
    return keep


def _check_min_interior(min_interior) -> int:
    if isinstance(min_interior, bool) or not isinstance(min_interior, (int, np.integer)):
        raise TypeError(f"min_interior must be an int, got {type(min_interior).__name__}")
    if min_interior < 0:
        raise ValueError(f"min_interior must be >= 0, got {min_interior}")
    return int(min_interior)


class MetaDataset:
    """Metrics tables of many cases, stacked for meta-model training and evaluation.

    Tables are added case by case with :meth:`add`; the stacked table has a ``case`` column
    (strings) in front. Rows are never dropped: the ``min_interior`` filter (and the removal of
    segments whose ``iou_adj`` is NaN) is applied when a training table is requested
    (:meth:`training_table`), so the dataset can also be used for prediction and review.

    Parameters
    ----------
    min_interior : int, default 1
        Segments with fewer than this many interior pixels (``S_in``) are left out of
        training and evaluation; 1 leaves out segments with an empty interior, as in the
        paper. 0 keeps all segments.

    Attributes
    ----------
    table : pandas.DataFrame
        All rows of all cases, ``case`` first.
    cases : list of str
        Case ids in the order they were added.

    Raises
    ------
    ValueError
        If ``min_interior`` is negative.

    Example
    -------
    >>> ds = MetaDataset()
    >>> ds.add("sub-01", synthetic_metrics_table(50, random_state=0))  # doctest: +ELLIPSIS
    MetaDataset(1 case, 50 segments, ...)
    >>> ds.cases
    ['sub-01']
    """

    def __init__(self, *, min_interior: int = 1):
        self.min_interior = _check_min_interior(min_interior)
        self._parts: list[pd.DataFrame] = []
        self._cases: list[str] = []
        self._columns: list | None = None
        self._cache: pd.DataFrame | None = None

    # -- building -------------------------------------------------------------------------
    def add(self, case_id: Hashable, table: pd.DataFrame) -> MetaDataset:
        """Add the metrics table of one case.

        Parameters
        ----------
        case_id : str or int
            Identifier of the case (image, volume, subject); stored as a string. Must be new.
        table : pandas.DataFrame
            Metrics table of the case, without a ``case`` column. Its columns must be those of
            the tables added before (same metrics, same number of ``cprob`` columns, ground
            truth columns either everywhere or nowhere).

        Returns
        -------
        MetaDataset
            ``self``, so that calls can be chained.

        Raises
        ------
        TypeError
            If ``table`` is not a DataFrame or ``case_id`` is not a str or int.
        ValueError
            If the case id is already present, the table has a ``case`` column, or its
            columns differ from those of the cases added before.

        Example
        -------
        >>> ds = MetaDataset().add("a", synthetic_metrics_table(20, random_state=1))
        >>> len(ds)
        20
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        if isinstance(case_id, bool) or not isinstance(case_id, (str, int, np.integer)):
            raise TypeError(f"case_id must be a str or int, got {type(case_id).__name__}")
        case = str(case_id)
        if case in self._cases:
            raise ValueError(f"case_id {case!r} was already added to this dataset")
        if "case" in table.columns:
            raise ValueError(
                f"table for case {case!r} already has a 'case' column; pass the per-case table "
                "(or build the dataset with MetaDataset.from_table)"
            )
        columns = list(table.columns)
        if self._columns is not None and columns != self._columns:
            raise ValueError(
                f"columns of case {case!r} differ from the cases added before: "
                + _describe_column_difference(self._columns, columns)
            )
        part = table.copy()
        part.insert(0, "case", pd.Series([case] * len(part), index=part.index, dtype=object))
        self._parts.append(part.reset_index(drop=True))
        self._cases.append(case)
        self._columns = columns
        self._cache = None
        return self

    @classmethod
    def from_table(cls, table: pd.DataFrame, *, min_interior: int = 1) -> MetaDataset:
        """Build a dataset from a stacked table that already has a ``case`` column.

        Parameters
        ----------
        table : pandas.DataFrame
            Stacked metrics table with a ``case`` column.
        min_interior : int, default 1
            See :class:`MetaDataset`.

        Returns
        -------
        MetaDataset

        Raises
        ------
        ValueError
            If ``table`` has no ``case`` column or a NaN case id.

        Example
        -------
        >>> t = synthetic_metrics_table(30, random_state=0)
        >>> t.insert(0, "case", ["a"] * 15 + ["b"] * 15)
        >>> MetaDataset.from_table(t).cases
        ['a', 'b']
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        if "case" not in table.columns:
            raise ValueError("table has no 'case' column; use MetaDataset().add(case_id, table)")
        if table["case"].isna().any():
            raise ValueError("table['case'] contains missing case ids")
        ds = cls(min_interior=min_interior)
        cases = table["case"].astype(str)
        for case in pd.unique(cases):
            ds.add(case, table.loc[cases == case].drop(columns="case"))
        return ds

    # -- access ---------------------------------------------------------------------------
    @property
    def table(self) -> pd.DataFrame:
        """All rows of all cases with a ``case`` column in front (a new DataFrame each call)."""
        if self._cache is None:
            if self._parts:
                self._cache = pd.concat(self._parts, ignore_index=True)
            else:
                self._cache = pd.DataFrame({"case": pd.Series([], dtype=object)})
        return self._cache.copy()

    @property
    def cases(self) -> list[str]:
        """Case ids in the order they were added."""
        return list(self._cases)

    @property
    def has_targets(self) -> bool:
        """Whether the tables carry ground-truth columns (``iou_adj``)."""
        return self._columns is not None and "iou_adj" in self._columns

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __repr__(self) -> str:
        n = len(self._cases)
        usable = ""
        if self.has_targets:
            usable = f", {int(self.training_rows().sum())} usable for training"
        return (
            f"MetaDataset({n} case{'s' if n != 1 else ''}, {len(self)} segments{usable}, "
            f"min_interior={self.min_interior})"
        )

    def training_rows(self, *, min_interior: int | None = None) -> np.ndarray:
        """Mask of the rows of :attr:`table` used for training (see :func:`training_rows`).

        Parameters
        ----------
        min_interior : int, optional
            Override of the dataset's ``min_interior``.

        Returns
        -------
        numpy.ndarray of bool

        Raises
        ------
        ValueError
            If the dataset is empty or has no ground truth.

        Example
        -------
        >>> ds = MetaDataset(min_interior=0).add("a", synthetic_metrics_table(20, random_state=1))
        >>> int(ds.training_rows().sum())
        20
        """
        if not self._parts:
            raise ValueError("the dataset is empty: add tables with MetaDataset.add first")
        mi = self.min_interior if min_interior is None else min_interior
        return training_rows(self.table, min_interior=mi)

    def training_table(self, *, min_interior: int | None = None) -> pd.DataFrame:
        """Rows usable for training: finite ``iou_adj`` and ``S_in`` >= ``min_interior``.

        Parameters
        ----------
        min_interior : int, optional
            Override of the dataset's ``min_interior``.

        Returns
        -------
        pandas.DataFrame
            A filtered copy of :attr:`table` with a fresh RangeIndex.

        Raises
        ------
        ValueError
            If the dataset is empty or has no ground truth.

        Example
        -------
        >>> ds = MetaDataset().add("a", synthetic_metrics_table(200, random_state=1))
        >>> (ds.training_table()["S_in"] >= 1).all()
        np.True_
        """
        keep = self.training_rows(min_interior=min_interior)
        return self.table.loc[keep].reset_index(drop=True)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the stacked table to Parquet (``.parquet``/``.pq``) or CSV (``.csv``).

        Parameters
        ----------
        path : str or pathlib.Path
            Destination; the format follows the suffix.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        ValueError
            If the suffix is neither Parquet nor CSV, or the dataset is empty.
        ImportError
            If Parquet is requested and pyarrow is not installed.
        OSError
            If writing fails (e.g. a full disk); an existing file at ``path`` is then unchanged.

        Example
        -------
        >>> import tempfile, pathlib
        >>> ds = MetaDataset().add("a", synthetic_metrics_table(20, random_state=1))
        >>> p = ds.save(pathlib.Path(tempfile.mkdtemp()) / "train.csv")
        >>> MetaDataset.load(p).cases
        ['a']
        """
        path = Path(path)
        fmt = _table_format(path)
        if not self._parts:
            raise ValueError("the dataset is empty: nothing to save")
        table = self.table
        if fmt == "parquet":
            _require_pyarrow()
        # a full disk or a crash leaves the previous file, never a truncated one that still parses
        if fmt == "csv":  # case names are user text: no cell may start a spreadsheet formula
            from .csv_safe import write_csv

            return write_csv(table, path)
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
        return path

    @classmethod
    def load(cls, path: str | Path, *, min_interior: int = 1) -> MetaDataset:
        """Read a dataset written by :meth:`save` (or any stacked table with a ``case`` column).

        Parameters
        ----------
        path : str or pathlib.Path
            A ``.parquet``/``.pq`` or ``.csv`` file.
        min_interior : int, default 1
            See :class:`MetaDataset`.

        Returns
        -------
        MetaDataset

        Raises
        ------
        ValueError
            If the suffix is not supported or the table has no ``case`` column.
        FileNotFoundError
            If ``path`` does not exist.

        Example
        -------
        >>> import tempfile, pathlib
        >>> ds = MetaDataset().add(7, synthetic_metrics_table(20, random_state=1))
        >>> p = ds.save(pathlib.Path(tempfile.mkdtemp()) / "train.parquet")
        >>> MetaDataset.load(p).cases
        ['7']
        """
        path = Path(path)
        fmt = _table_format(path)
        if not path.exists():
            raise FileNotFoundError(f"no such dataset file: {path}")
        if fmt == "parquet":
            _require_pyarrow()
            table = pd.read_parquet(path)
        else:
            from .csv_safe import unescape_frame

            table = unescape_frame(pd.read_csv(path, dtype={"case": str}, keep_default_na=False,
                                               na_values=["", "NaN", "nan"]))
        return cls.from_table(table, min_interior=min_interior)


def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"path must end in .parquet, .pq or .csv, got {path.name!r}")


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:  # pragma: no cover - pyarrow is installed in the test env
        raise ImportError("saving or loading Parquet needs pyarrow (pip install pyarrow)") from err


def _describe_column_difference(expected: Iterable, got: Iterable) -> str:
    expected, got = list(expected), list(got)
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    n_exp = sum(1 for c in expected if str(c).startswith("cprob"))
    n_got = sum(1 for c in got if str(c).startswith("cprob"))
    if n_exp != n_got:
        parts.append(
            f"{n_exp} class probability columns (cprob*) expected but {n_got} found: "
            "the tables come from segmentations with different numbers of classes"
        )
    if not parts:
        parts.append("same columns in a different order")
    return "; ".join(parts)


def synthetic_metrics_table(
    n_segments: int,
    *,
    n_classes: int = 4,
    samples: bool = False,
    random_state: int | None = None,
) -> pd.DataFrame:
    """A random table shaped like the output of ``segment_metrics`` (with ground truth).

    Meant for tests, benchmarks and examples. A latent quality per segment drives size,
    dispersion and the targets, so that meta models have something to learn: bad segments are
    small, with high entropy, and more often have IoU_adj = 0.

    Parameters
    ----------
    n_segments : int
        Number of rows.
    n_classes : int, default 4
        Number of classes q (columns ``cprob0`` .. ``cprob{q-1}``).
    samples : bool, default False
        Also emit the MC-sample measures MI and VAR.
    random_state : int, optional
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    pandas.DataFrame
        Columns ``index, class, S, S_in, S_bd, S_rel, S_rel_in``, five columns per measure,
        ``cprob*``, ``iou``, ``iou_adj``.

    Raises
    ------
    ValueError
        If ``n_segments`` < 0 or ``n_classes`` < 2.

    Example
    -------
    >>> t = synthetic_metrics_table(5, n_classes=3, random_state=0)
    >>> list(t.columns[-5:])
    ['cprob0', 'cprob1', 'cprob2', 'iou', 'iou_adj']
    """
    if int(n_segments) < 0:
        raise ValueError(f"n_segments must be >= 0, got {n_segments}")
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    n, q = int(n_segments), int(n_classes)
    rng = np.random.default_rng(random_state)
    quality = rng.normal(size=n)
    cls = rng.integers(0, q, size=n)
    size = np.maximum(1, np.round(np.exp(rng.normal(2.5 + 0.9 * quality, 1.3)))).astype(np.int64)
    boundary = np.minimum(size, np.ceil(2.5 * np.sqrt(size) * rng.uniform(0.8, 1.5, n))).astype(
        np.int64
    )
    interior = size - boundary
    cols: dict[str, np.ndarray] = {
        "index": np.arange(1, n + 1, dtype=np.int64),
        "class": cls.astype(np.int64),
        "S": size,
        "S_in": interior,
        "S_bd": boundary,
        "S_rel": size / np.maximum(boundary, 1),
        "S_rel_in": interior / np.maximum(boundary, 1),
    }
    noise = rng.normal(size=n)
    measures = ["E", "D", "V"] + (["MI", "VAR"] if samples else [])
    for j, name in enumerate(measures):
        level = 1.0 / (1.0 + np.exp(1.2 + 0.9 * quality + 0.5 * noise + 0.4 * rng.normal(size=n)))
        level *= 0.9 if j < 3 else 0.3
        bd = np.clip(level * rng.uniform(1.0, 1.5, n), 0.0, 1.0)
        inn = np.where(interior > 0, np.clip(level * rng.uniform(0.4, 1.0, n), 0.0, 1.0), 0.0)
        mean = (bd * boundary + inn * interior) / size
        cols[name] = mean
        cols[f"{name}_in"] = inn
        cols[f"{name}_bd"] = bd
        cols[f"{name}_rel"] = mean * cols["S_rel"]
        cols[f"{name}_rel_in"] = inn * cols["S_rel_in"]
    own = np.clip(1.0 - cols["V"], 1.0 / q, 1.0)
    rows = np.arange(n)
    cprob = rng.dirichlet(np.ones(q), size=n)
    cprob[rows, cls] = 0.0
    cprob *= ((1.0 - own) / np.maximum(cprob.sum(axis=1), 1e-12))[:, None]
    cprob[rows, cls] = own
    for i in range(q):
        cols[f"cprob{i}"] = cprob[:, i]
    p_zero = 1.0 / (1.0 + np.exp(1.5 + 1.8 * quality + 0.6 * rng.normal(size=n)))
    zero = rng.random(n) < p_zero
    good = 1.0 / (1.0 + np.exp(-(0.2 + 1.1 * quality + 0.5 * rng.normal(size=n))))
    iou_adj = np.where(zero, 0.0, good)
    cols["iou"] = iou_adj * rng.uniform(0.8, 1.0, n)
    cols["iou_adj"] = iou_adj
    return pd.DataFrame(cols)
