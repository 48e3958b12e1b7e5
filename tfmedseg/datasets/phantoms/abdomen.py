"""Abdominal CT phantom: body, liver with lobes and tumours, spleen, kidneys, spine, lung bases.

Arrays are canonical ``[D, H, W]`` (superior, posterior, patient-left; see
:mod:`tfmedseg.io.volume`). Intensities are HU of a portal-venous-free (plain) CT: air -1000,
fat about -100, muscle about 50, liver about 60, spleen 50, kidneys 140, vertebral bone 250-700,
lung -850. Tumours are hypo- or hyper-dense against the liver; portal-vein branches (hyper-dense
tubes labelled liver, as in LiTS) are the distractor a network must not call tumour.

Tumour sizes are planned so that the LiTS size groups of seed 002 (per tumour: small < 1000
voxels, medium 1000-10000, large > 10000) all occur on the default grid within three cases.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from tfmedseg.datasets.phantoms._shapes import ellipsoid, grid_mm, smooth_field, tube

__all__ = ["AbdomenPhantom", "make_abdomen", "DEFAULT_CT_SHAPE", "DEFAULT_CT_SPACING", "TUMOUR_SIZE_GROUPS",
           "DEFAULT_TUMOUR_PLAN"]

#: Default CT grid ``[D, H, W]`` and spacing (mm) of the abdominal phantom.
DEFAULT_CT_SHAPE = (48, 128, 128)
DEFAULT_CT_SPACING = (3.0, 2.5, 2.5)
#: Equivalent-sphere radius range (mm) per size group, for the default 18.75 mm^3 voxel.
TUMOUR_SIZE_GROUPS = {"small": (3.0, 11.0), "medium": (18.0, 26.0), "large": (40.0, 46.0)}


@dataclasses.dataclass
class AbdomenPhantom:
    """One synthetic abdominal CT.

    Attributes:
        ct: ``[D, H, W]`` int16 HU.
        label: ``[D, H, W]`` uint8, 0 background, 1 liver, 2 tumour.
        spacing: ``(sz, sy, sx)`` mm.
        origin_lps: DICOM LPS position (mm) of voxel ``(0, 0, 0)``.
        masks: Organ name -> ``[D, H, W]`` bool (``body``, ``liver``, ``spleen``, ``left_kidney``,
            ``right_kidney``, ``lungs``, ``spine``, ``tumours``).
        tumours: Per tumour: ``center_mm`` (z, y, x, centred grid), ``radius_mm``, ``group``
            (planned size group), ``contrast`` (``"hypo"``/``"hyper"``), ``voxels``,
            ``mask`` (bool array).
    """

    ct: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    masks: dict[str, np.ndarray]
    tumours: list[dict]


#: Default tumour plan: the first tumour's size group cycles with the case index, the extra ones
#: (0-3) are drawn from ``extra``.
DEFAULT_TUMOUR_PLAN = {"first": ("large", "medium", "small"), "extra": ("small", "small", "medium")}


def _tumour_plan(rng: np.random.Generator, index: int, allow_empty: bool, plan: dict) -> list[str]:
    if allow_empty and index % 4 == 3:
        return []
    groups = [plan["first"][index % len(plan["first"])]]
    extra = int(rng.integers(0, 4))
    groups += [str(g) for g in rng.choice(list(plan["extra"]), size=extra)]
    return groups


def make_abdomen(
    rng: np.random.Generator,
    index: int = 0,
    *,
    shape: tuple[int, int, int] = DEFAULT_CT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_CT_SPACING,
    allow_empty: bool = True,
    tumour_plan: dict | None = None,
) -> AbdomenPhantom:
    """Draw one abdominal CT phantom.

    Args:
        rng: Random generator (the case's own, for determinism per seed and case).
        index: Case index; it fixes the planned size group of the first tumour
            (``index % 3``: large, medium, small) and, with ``allow_empty``, a tumour-free liver
            for ``index % 4 == 3``.
        shape: ``[D, H, W]`` grid.
        spacing: Voxel size (mm) along ``(D, H, W)``.
        allow_empty: Allow livers without tumours.
        tumour_plan: ``{"first": groups, "extra": groups}`` of :data:`TUMOUR_SIZE_GROUPS` names
            (default :data:`DEFAULT_TUMOUR_PLAN`): the first tumour's group is
            ``first[index % len(first)]``, 0-3 extra tumours are drawn from ``extra``.

    Returns:
        An :class:`AbdomenPhantom`.
    """
    z, y, x = grid_mm(shape, spacing)
    coords = (z, y, x)
    scale = rng.uniform(0.92, 1.06)
    field = smooth_field(rng, shape, (2.0, 5.0, 5.0))
    hu = np.full(shape, -1000.0, np.float32)

    # Body: subcutaneous fat, muscle wall, intra-abdominal fat.
    bx, by = 150.0 * scale * rng.uniform(0.95, 1.05), 108.0 * scale
    body = ellipsoid((y, x), (4.0, 0.0), (by, bx))
    body = np.broadcast_to(body, shape)
    wall = ellipsoid((y, x), (4.0, 0.0), (by - 14, bx - 16))
    inner = ellipsoid((y, x), (4.0, 0.0), (by - 24, bx - 26))
    hu[body] = -100.0
    hu[np.broadcast_to(wall, shape)] = 50.0
    hu[np.broadcast_to(inner, shape)] = -90.0
    for side in (-1, 1):  # paraspinal muscles
        hu[np.broadcast_to(ellipsoid((y, x), (72.0, side * 32.0), (22.0, 24.0)), shape)] = 55.0

    # Lung bases (top slices) and heart, under the diaphragm dome of the liver.
    z_top = (shape[0] - 1) / 2.0 * spacing[0]
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= ellipsoid(coords, (z_top + 30, 10.0, side * 72 * scale), (70.0, 80.0, 58.0 * scale))
    heart = ellipsoid(coords, (z_top + 20, -30.0, 22.0), (45.0, 50.0, 55.0))
    lungs &= ~heart

    liver_z = z_top - rng.uniform(55, 70)
    right_lobe = ellipsoid(coords, (liver_z, 0.0, -55.0 * scale), (58.0, 70.0 * scale, 68.0 * scale), field, 0.06)
    left_lobe = ellipsoid(coords, (liver_z + 12, -38.0, 22.0), (36.0, 34.0, rng.uniform(45, 60)), field, 0.06)
    caudate = ellipsoid(coords, (liver_z + 5, 22.0, -12.0), (25.0, 15.0, 14.0))
    keep_out = ellipsoid((y, x), (68.0, 0.0), (32.0, 26.0)) | ellipsoid((y, x), (30.0, 18.0), (14.0, 14.0))
    keep_out |= ellipsoid((y, x), (28.0, -22.0), (13.0, 14.0))  # spine, aorta, IVC
    liver = (right_lobe | left_lobe | caudate) & np.broadcast_to(inner & ~keep_out, shape)
    lungs &= ~liver
    spleen = ellipsoid(coords, (liver_z + 5, 40.0, 88.0 * scale), (45.0, 42.0, 24.0), field, 0.08) & ~liver
    kidneys = {}
    for name, side in (("right_kidney", -1), ("left_kidney", 1)):
        kidneys[name] = ellipsoid(coords, (liver_z - 60 + side * 6, 55.0, side * 70.0 * scale), (48.0, 25.0, 24.0), field, 0.05)
    stomach = ellipsoid(coords, (liver_z + 5, -45.0, 55.0), (35.0, 28.0, 32.0), field, 0.1) & ~liver & ~spleen

    hu[lungs] = -850.0
    hu[heart & np.broadcast_to(body, shape)] = 40.0
    hu[stomach] = 15.0
    hu[stomach & (y < -58)] = -800.0  # gas cap
    # Bowel loops with gas pockets in the lower abdomen.
    for _ in range(int(rng.integers(4, 8))):
        c = (rng.uniform(-z_top, liver_z - 20), rng.uniform(-70, 10), rng.uniform(-80, 80))
        r = rng.uniform(12, 22)
        loop = ellipsoid(coords, c, (r, r * 0.8, r * 1.2)) & np.broadcast_to(inner, shape)
        hu[loop] = rng.uniform(10, 40)
        hu[loop & ellipsoid(coords, c, (r * 0.4, r * 0.4, r * 0.5))] = -700.0

    liver_hu = rng.uniform(52, 66)
    hu[liver] = liver_hu + 4.0 * field[liver]
    hu[spleen] = liver_hu - rng.uniform(5, 12)
    for name in kidneys:
        kidneys[name] &= ~liver
        hu[kidneys[name]] = 140.0
    # Portal vein branches inside the liver (labelled liver) and the great vessels.
    hilum = (liver_z - 5, 15.0, -25.0)
    for _ in range(3):
        end = (liver_z + rng.uniform(-30, 30), rng.uniform(-40, 30), -55 * scale + rng.uniform(-40, 30))
        hu[tube(coords, hilum, end, rng.uniform(3.0, 5.0)) & liver] = 130.0
    hu[np.broadcast_to(ellipsoid((y, x), (30.0, 18.0), (11.0, 11.0)), shape)] = 150.0  # aorta
    hu[np.broadcast_to(ellipsoid((y, x), (28.0, -22.0), (12.0, 13.0)), shape)] = 110.0  # IVC

    # Spine: vertebral body (cortex + cancellous), canal, spinous process; discs every ~30 mm.
    vb_outer = np.broadcast_to(ellipsoid((y, x), (58.0, 0.0), (17.0, 20.0)), shape)
    vb_inner = np.broadcast_to(ellipsoid((y, x), (58.0, 0.0), (13.0, 16.0)), shape)
    canal = np.broadcast_to(ellipsoid((y, x), (84.0, 0.0), (7.0, 8.0)), shape)
    arch = np.broadcast_to(ellipsoid((y, x), (88.0, 0.0), (13.0, 17.0)), shape) & ~canal
    spinous = np.broadcast_to(ellipsoid((y, x), (102.0, 0.0), (10.0, 4.0)), shape)
    disc = np.broadcast_to((np.mod(z + rng.uniform(0, 30), 30.0) < 5.0), shape)
    spine = vb_outer | arch | spinous
    hu[vb_outer] = 650.0
    hu[vb_inner] = 240.0
    hu[vb_outer & disc] = 80.0
    hu[arch | spinous] = 550.0
    hu[canal] = 20.0

    # Tumours inside the liver.
    tumours = []
    tumour_mask = np.zeros(shape, bool)
    depth = ndimage.distance_transform_edt(liver, sampling=spacing)
    for group in _tumour_plan(rng, index, allow_empty, tumour_plan or DEFAULT_TUMOUR_PLAN):
        lo, hi = TUMOUR_SIZE_GROUPS[group]
        radius = rng.uniform(lo, hi)
        room = depth >= min(radius * 0.7, depth.max() * 0.9)
        if tumour_mask.any():
            room &= ndimage.distance_transform_edt(~tumour_mask, sampling=spacing) > radius + 6.0
        if not room.any():
            continue
        candidates = np.argwhere(room)
        centre_idx = candidates[rng.integers(len(candidates))]
        center = tuple(float(c[tuple(np.minimum(centre_idx, np.array(c.shape) - 1))]) for c in coords)
        axes = tuple(radius * rng.uniform(0.85, 1.15) for _ in range(3))
        mask = ellipsoid(coords, center, axes, field, 0.08 if radius > 8 else 0.0) & liver
        if not mask.any():
            mask = np.zeros(shape, bool)
            mask[tuple(centre_idx)] = True
        contrast = "hyper" if rng.random() < 0.35 else "hypo"
        delta = rng.uniform(30, 55) if contrast == "hyper" else -rng.uniform(18, 40)
        values = liver_hu + delta + 6.0 * field[mask]
        hu[mask] = values
        if group == "large":  # necrotic core
            core = ellipsoid(coords, center, tuple(a * 0.45 for a in axes)) & mask
            hu[core] = liver_hu - 45.0
        tumour_mask |= mask
        tumours.append({"center_mm": center, "radius_mm": float(radius), "group": group,
                        "contrast": contrast, "voxels": int(mask.sum()), "mask": mask})

    hu[~np.broadcast_to(body, shape)] = -1000.0
    hu = ndimage.gaussian_filter(hu, sigma=(0.4, 0.7, 0.7))
    hu += rng.normal(0.0, 10.0, shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[liver] = 1
    label[tumour_mask] = 2
    extent = np.array(shape) * np.array(spacing)
    origin_lps = (-(extent[2] - spacing[2]) / 2.0, -(extent[1] - spacing[1]) / 2.0, -(extent[0] - spacing[0]) / 2.0)
    masks = {"body": np.broadcast_to(body, shape).copy(), "liver": liver, "spleen": spleen, "lungs": lungs,
             "spine": spine, "tumours": tumour_mask, **kidneys}
    return AbdomenPhantom(ct, label, tuple(spacing), tuple(float(o) for o in origin_lps), masks, tumours)
