"""Experiment reports: per-case CSV, a summary table in a seed's layout, and an overlay montage.

Every experiment evaluates each case into one row (:func:`evaluate_segmentation_case` for label
maps, or its own dict of numbers) and then calls :func:`write_report` once::

    rows = [dict(model="3D MobileNet-V2", case=cid, **evaluate_segmentation_case(p, y, spacing=sp))
            for cid, p, y, sp in cases]
    write_report("runs/exp1", rows, layout=LITS_TUMOUR_LAYOUT, group_by="model",
                 overlays=[OverlayItem(cid, ct, liver, lesion) for ...])

which writes ``per_case.csv``, ``summary.md`` (one row per ``group_by`` value, the seed's columns)
and ``montage.png``. Numbers are reduced with ``np.nanmean`` and friends; infinite values (a surface
distance with an empty mask) are excluded and counted in a ``n_inf`` note under the table.

One module per kind of output: :mod:`~tfmedseg.reports.tables` (columns, reductions, markdown),
:mod:`~tfmedseg.reports.layouts` (the seeds' column layouts), :mod:`~tfmedseg.reports.segmentation`
(per-case rows of label maps), :mod:`~tfmedseg.reports.overlays` (montage),
:mod:`~tfmedseg.reports.files` (the report files), :mod:`~tfmedseg.reports.lits` (seed 002's extra
tables).
"""

from tfmedseg.reports.files import write_report
from tfmedseg.reports.layouts import DICE_IOU_LAYOUT, LITS_TUMOUR_LAYOUT, SIZE_DICE_LAYOUT
from tfmedseg.reports.overlays import OverlayItem, overlay_montage
from tfmedseg.reports.segmentation import LITS_CLASSES, evaluate_segmentation_case
from tfmedseg.reports.tables import REDUCTIONS, Column, format_table, summarize

__all__ = [
    "REDUCTIONS",
    "Column",
    "OverlayItem",
    "LITS_TUMOUR_LAYOUT",
    "DICE_IOU_LAYOUT",
    "SIZE_DICE_LAYOUT",
    "LITS_CLASSES",
    "evaluate_segmentation_case",
    "summarize",
    "format_table",
    "overlay_montage",
    "write_report",
]
