"""Column layouts of the seeds' summary tables (:class:`~tfmedseg.reports.tables.Column` tuples)."""

from __future__ import annotations

from tfmedseg.reports.tables import Column

__all__ = ["LITS_TUMOUR_LAYOUT", "DICE_IOU_LAYOUT", "SIZE_DICE_LAYOUT"]

#: Seed 002 Table 4.8 (LiTS tumour): Dice/case, Global Dice, VOE, RVD, ASSD.
LITS_TUMOUR_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Dice/case", "tumour_dice"),
    Column("Global Dice", "tumour", "global_dice"),
    Column("VOE", "tumour_voe"),
    Column("RVD", "tumour_rvd"),
    Column("ASSD", "tumour_assd", fmt="{:.4f}"),
)
#: Seed 000 tables: DSC / IoU of liver and tumour.
DICE_IOU_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Liver DSC", "liver_dice", fmt="{:.2f}"),
    Column("Liver IoU", "liver_iou", fmt="{:.2f}"),
    Column("Tumour DSC", "tumour_dice", fmt="{:.2f}"),
    Column("Tumour IoU", "tumour_iou", fmt="{:.2f}"),
)
#: Seed 002 Tables 4.6 / 4.7: tumour Dice by lesion size.
SIZE_DICE_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Small", "tumour_dice_small"),
    Column("Medium", "tumour_dice_medium"),
    Column("Large", "tumour_dice_large"),
)

