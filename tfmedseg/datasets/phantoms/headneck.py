"""Head and neck PET/CT phantom (HECKTOR-like): skull, brain, mandible, airway, neck, GTVt.

CT (HU) on a fine grid, PET (SUVbw) on its own coarser grid covering the same field of view, in
one world frame. PET has a soft-tissue background of SUV about 1, high brain uptake, tonsils and
parotids as physiological distractors, sometimes a hot (unlabelled) lymph node, and the primary
tumour (GTVt, the label) as a hot spot in the oropharynx that is barely visible on CT.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from tfmedseg.datasets.phantoms._shapes import ellipsoid, grid_mm, smooth_field, tube

__all__ = ["HeadNeckPhantom", "make_headneck", "DEFAULT_HN_CT_SHAPE", "DEFAULT_HN_CT_SPACING", "DEFAULT_PET_SPACING", "BBOX_SIZE_MM"]

DEFAULT_HN_CT_SHAPE = (56, 112, 112)
DEFAULT_HN_CT_SPACING = (3.0, 2.0, 2.0)
DEFAULT_PET_SPACING = (4.0, 4.0, 4.0)
#: Edge of the HECKTOR bounding-box cube (mm).
BBOX_SIZE_MM = 144.0


@dataclasses.dataclass
class HeadNeckPhantom:
    """One synthetic head and neck PET/CT.

    Attributes:
        ct: ``[D, H, W]`` int16 HU on the CT grid.
        ct_spacing, ct_origin_lps: CT grid spacing (mm) and LPS position of voxel 0.
        pet: ``[D', H', W']`` float32 SUVbw on the PET grid.
        pet_spacing, pet_origin_lps: PET grid.
        label: ``[D, H, W]`` uint8 GTVt 0/1 on the CT grid.
        bbox_mm: ``(x1, x2, y1, y2, z1, z2)`` LPS mm, a 144 mm cube around the oropharynx.
        tumour: ``center_mm`` (z, y, x LPS), ``radius_mm``, ``suv_max``.
    """

    ct: np.ndarray
    ct_spacing: tuple[float, float, float]
    ct_origin_lps: tuple[float, float, float]
    pet: np.ndarray
    pet_spacing: tuple[float, float, float]
    pet_origin_lps: tuple[float, float, float]
    label: np.ndarray
    bbox_mm: tuple[float, float, float, float, float, float]
    tumour: dict


def _origin(shape, spacing):
    return tuple(float(-(n - 1) * s / 2.0) for n, s in zip(shape[::-1], spacing[::-1]))


def make_headneck(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int, int] = DEFAULT_HN_CT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_HN_CT_SPACING,
    pet_spacing: tuple[float, float, float] = DEFAULT_PET_SPACING,
) -> HeadNeckPhantom:
    """Draw one head and neck PET/CT phantom.

    Args:
        rng: The case's random generator.
        shape: CT grid ``[D, H, W]``.
        spacing: CT voxel size (mm).
        pet_spacing: PET voxel size (mm); the PET grid covers the CT field of view.

    Returns:
        A :class:`HeadNeckPhantom`.
    """
    z, y, x = grid_mm(shape, spacing)
    coords = (z, y, x)
    field = smooth_field(rng, shape, (2.0, 4.0, 4.0))
    s = rng.uniform(0.93, 1.07)
    hu = np.full(shape, -1000.0, np.float32)
    suv = np.zeros(shape, np.float32)

    skull_c = (72.0, 5.0, 0.0)
    skull_outer = ellipsoid(coords, skull_c, (85.0 * s, 95.0 * s, 74.0 * s))
    brain = ellipsoid(coords, skull_c, (78.0 * s, 88.0 * s, 67.0 * s)) & (z > 12)
    skull = skull_outer & ~brain & (z > 12)
    neck = np.broadcast_to(ellipsoid((y, x), (8.0, 0.0), (58.0 * s, 60.0 * s)), shape) & (z < 0)
    face = ellipsoid(coords, (10.0, -8.0, 0.0), (42.0, 88.0 * s, 72.0 * s))
    body = skull_outer | neck | face | ellipsoid(coords, (12.0, 0.0, 0.0), (30.0, 70.0 * s, 62.0 * s))
    fat = body & ~ellipsoid(coords, (10.0, 0.0, 0.0), (200.0, 52.0 * s, 54.0 * s)) & (z < 10)
    hu[body] = 40.0
    suv[body] = rng.uniform(0.8, 1.2)
    hu[fat] = -100.0
    suv[fat] = 0.4
    for side in (-1, 1):  # sternocleidomastoid muscles
        scm = tube(coords, (-85.0, -20.0, side * 15.0), (-5.0, 25.0, side * 48.0 * s), 9.0)
        hu[scm & body] = 55.0
        suv[scm & body] = rng.uniform(0.9, 1.6)

    hu[brain] = 32.0 + 4.0 * field[brain]
    suv[brain] = rng.uniform(5.0, 7.0)
    cortex = brain & ~ellipsoid(coords, skull_c, (68.0 * s, 78.0 * s, 57.0 * s))
    suv[cortex] = rng.uniform(8.0, 10.0)
    hu[skull] = 1100.0
    suv[skull] = 0.6

    # Mandible (U-shaped body plus rami), tongue, parotids, tonsils.
    mand_ring = ellipsoid((y, x), (-22.0, 0.0), (62.0 * s, 50.0 * s)) & ~ellipsoid((y, x), (-22.0, 0.0), (53.0 * s, 41.0 * s))
    mandible = np.broadcast_to(mand_ring & (y < -5), shape) & (z > -30) & (z < -14)
    for side in (-1, 1):
        mandible = mandible | tube(coords, (-22.0, -10.0, side * 45.0 * s), (8.0, 12.0, side * 47.0 * s), 5.0)
    hu[mandible] = 1200.0
    suv[mandible] = 0.7
    tongue = ellipsoid(coords, (-8.0, -32.0, 0.0), (16.0, 24.0, 24.0 * s)) & ~mandible
    hu[tongue] = 65.0
    suv[tongue] = rng.uniform(1.2, 2.2)
    for side in (-1, 1):
        parotid = ellipsoid(coords, (5.0, 12.0, side * 50.0 * s), (20.0, 15.0, 11.0))
        hu[parotid] = -15.0
        suv[parotid] = rng.uniform(1.5, 2.5)
        tonsil = ellipsoid(coords, (-4.0, -2.0, side * 14.0), (10.0, 8.0, 6.0))
        hu[tonsil] = 45.0
        suv[tonsil] = rng.uniform(2.5, 5.0)

    # GTVt: primary tumour in the oropharynx (tonsil or base of tongue).
    side = rng.choice([-1.0, 1.0])
    center = (rng.uniform(-12.0, 2.0), rng.uniform(-12.0, 2.0), side * rng.uniform(4.0, 16.0))
    radius = rng.uniform(8.0, 17.0)
    axes = tuple(radius * rng.uniform(0.8, 1.2) for _ in range(3))
    airway = tube(coords, (-90.0, -22.0, 0.0), (-22.0, -8.0, 0.0), 8.0)
    airway |= tube(coords, (-22.0, -8.0, 0.0), (0.0, 6.0, 0.0), 7.0)
    airway |= tube(coords, (0.0, 6.0, 0.0), (22.0, 12.0, 0.0), 6.0)
    spine_col = tube(coords, (-95.0, 32.0, 0.0), (12.0, 28.0, 0.0), 11.0)
    canal = tube(coords, (-95.0, 45.0, 0.0), (20.0, 41.0, 0.0), 5.0)
    gtv = ellipsoid(coords, center, axes, field, 0.1) & body & ~mandible & ~spine_col
    airway &= ~gtv
    hu[gtv] = rng.uniform(50.0, 70.0) + 5.0 * field[gtv]
    suv_max = rng.uniform(8.0, 18.0)
    rel = np.sqrt(sum(((c - c0) / a) ** 2 for c, c0, a in zip(coords, center, axes)))
    suv[gtv] = suv_max * (0.75 + 0.25 * np.clip(1.0 - rel[gtv], 0, 1)) + 0.8 * field[gtv]
    if radius > 13.0:  # hypometabolic core
        core = gtv & (rel < 0.35)
        suv[core] = suv_max * 0.4
    if rng.random() < 0.6:  # hot level-II lymph node, not part of GTVt
        node_c = (rng.uniform(-35.0, -15.0), rng.uniform(0.0, 15.0), -side * rng.uniform(28.0, 38.0))
        node = ellipsoid(coords, node_c, (rng.uniform(5, 9),) * 3) & body & ~gtv
        hu[node] = 45.0
        suv[node] = rng.uniform(4.0, 10.0)
    hu[airway & body] = -1000.0
    suv[airway] = 0.0
    hu[spine_col] = 700.0
    suv[spine_col] = 0.8
    hu[canal] = 25.0
    for side_ in (-1, 1):  # maxillary sinuses
        hu[ellipsoid(coords, (28.0, -40.0, side_ * 26.0), (14.0, 14.0, 12.0))] = -950.0

    hu[~body] = -1000.0
    suv[~body] = 0.0
    hu = ndimage.gaussian_filter(hu, sigma=(0.4, 0.6, 0.6)) + rng.normal(0.0, 12.0, shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    label = gtv.astype(np.uint8)

    # PET: blur to ~7 mm FWHM, sample on the coarse grid, Poisson-like noise.
    sigma_mm = 7.0 / 2.355
    suv_blur = ndimage.gaussian_filter(suv, sigma=tuple(sigma_mm / sp for sp in spacing))
    fov = np.array(shape) * np.array(spacing)
    pet_shape = tuple(int(round(f / p)) for f, p in zip(fov, pet_spacing))
    pet_centres = [((np.arange(n) - (n - 1) / 2.0) * p) for n, p in zip(pet_shape, pet_spacing)]
    idx = np.meshgrid(*[c / sp + (n - 1) / 2.0 for c, sp, n in zip(pet_centres, spacing, shape)], indexing="ij")
    pet = ndimage.map_coordinates(suv_blur, idx, order=1, mode="nearest")
    counts_per_suv = 25.0
    pet = rng.poisson(np.clip(pet, 0, None) * counts_per_suv).astype(np.float32) / counts_per_suv

    ct_origin = _origin(shape, spacing)
    pet_origin = _origin(pet_shape, pet_spacing)
    half = BBOX_SIZE_MM / 2.0
    zc = float(np.clip(center[0] + rng.uniform(-8, 8), -fov[0] / 2 + half, fov[0] / 2 - half))
    yc = float(center[1] + rng.uniform(-10, 10))
    xc = float(center[2] * 0.3 + rng.uniform(-10, 10))
    bbox = (xc - half, xc + half, yc - half, yc + half, zc - half, zc + half)
    tumour = {"center_mm": tuple(float(c) for c in center), "radius_mm": float(radius), "suv_max": float(suv_max)}
    return HeadNeckPhantom(ct, tuple(spacing), ct_origin, pet, tuple(pet_spacing), pet_origin, label, bbox, tumour)
