"""Whole-body 99mTc bone-scan phantom (anterior + posterior views) and its layout writer.

A skeleton-like uptake pattern (skull, spine, ribs, sternum, clavicles, scapulae, pelvis, long
bones, hot joints), soft-tissue background, kidneys (mostly posterior) and a hot bladder, seen
from the front and from behind with depth-dependent weights, blurred and Poisson sampled.

Lesions of the four seed-001 classes differ in shape, intensity and location:

* ``malignant``: 2-6 round hot foci (3-6x bone) scattered asymmetrically over spine, ribs,
  sternum, pelvis, skull and proximal long bones;
* ``degenerative``: a symmetric pair of moderate (1.5-2.2x) oval foci at shoulders, knees or
  the lower lumbar facets;
* ``post_trauma``: 2-4 small foci (2.5-3.5x) on consecutive ribs, aligned vertically;
* ``infection_inflammation``: one diffuse irregular region of mild uptake at a limb joint or the
  sternoclavicular region (its annotation is a mask PNG, the others are polygons).

Coordinates: a view is ``[H, W]`` with the patient's head at row 0; in the arrays generated here
(and returned by :func:`tfmedseg.io.nm_planar.read_nm_wholebody`) both views have the patient's
right on the image's left. The DICOM file and the annotation JSON store the posterior view as
seen from behind (mirrored), like a real camera; see ``docs/datasets.md``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask

from tfmedseg.datasets.case import LESION_CLASSES
from tfmedseg.datasets.phantoms._shapes import tube

__all__ = ["BoneScanPhantom", "make_bone_scan", "write_bone_scan", "DEFAULT_VIEW_SHAPE", "DEFAULT_PIXEL_MM", "VIEWS"]

DEFAULT_VIEW_SHAPE = (384, 128)
DEFAULT_PIXEL_MM = 4.8
VIEWS = ("anterior", "posterior")
_TOP_MARGIN_MM = 40.0


@dataclasses.dataclass
class BoneScanPhantom:
    """One synthetic whole-body bone scan.

    Attributes:
        views: ``"anterior"`` / ``"posterior"`` -> ``[H, W]`` uint16 counts (shared left/right
            convention: patient's right on the image's left).
        pixel_mm: Pixel size (mm), square.
        lesions: Per lesion: ``class``, ``polygon_mm`` (``[(v, u), ...]`` body mm) and per view
            ``masks[view]`` (bool ``[H, W]``, shared convention).
        chest_box: ``(y0, x0, y1, x1)`` pixels (exclusive end), shared convention, same in both views.
    """

    views: dict[str, np.ndarray]
    pixel_mm: float
    lesions: list[dict]
    chest_box: tuple[int, int, int, int]


class _Canvas:
    """Anterior and posterior activity maps on body coordinates (v down from the head, u to the patient's left)."""

    def __init__(self, shape: tuple[int, int], pixel_mm: float):
        self.shape = shape
        self.mm = pixel_mm
        self.v = (np.arange(shape[0], dtype=np.float32) * pixel_mm - _TOP_MARGIN_MM)[:, None]
        self.u = ((np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2.0) * pixel_mm)[None, :]
        self.maps = {view: np.zeros(shape, np.float32) for view in VIEWS}

    def add(self, mask: np.ndarray, anterior: float, posterior: float) -> None:
        self.maps["anterior"] += anterior * mask
        self.maps["posterior"] += posterior * mask

    def ellipse(self, v0, u0, av, au) -> np.ndarray:
        return ((self.v - v0) / av) ** 2 + ((self.u - u0) / au) ** 2 < 1.0

    def bar(self, p0, p1, radius) -> np.ndarray:
        return tube((self.v, self.u), p0, p1, radius)

    def to_pixels(self, points_mm) -> np.ndarray:
        """``[(v, u), ...]`` mm -> ``[(row, col), ...]`` float pixels."""
        pts = np.asarray(points_mm, np.float64)
        return np.stack([(pts[:, 0] + _TOP_MARGIN_MM) / self.mm, pts[:, 1] / self.mm + (self.shape[1] - 1) / 2.0], 1)


def _blob_polygon(rng, v0, u0, rv, ru, irregular=0.08, n=14) -> list[tuple[float, float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
    radii = 1.0 + irregular * rng.standard_normal(n)
    return [(float(v0 + rv * r * np.sin(a)), float(u0 + ru * r * np.cos(a))) for a, r in zip(angles, radii)]


def _skeleton(c: _Canvas, k: float) -> dict:
    """Draw the normal uptake pattern; returns anatomical landmarks (mm) used for lesions."""
    body = c.ellipse(110 * k, 0, 115 * k, 85 * k) | c.bar((200 * k, 0), (300 * k, 0), 55 * k)
    body |= c.ellipse(620 * k, 0, 360 * k, 175 * k) | c.bar((950 * k, -90 * k), (1700 * k, -75 * k), 70 * k)
    body |= c.bar((950 * k, 90 * k), (1700 * k, 75 * k), 70 * k)
    for s in (-1, 1):
        body |= c.bar((310 * k, s * 185 * k), (900 * k, s * 215 * k), 45 * k)
    c.add(body, 0.08, 0.08)
    skull = c.ellipse(110 * k, 0, 110 * k, 80 * k)
    c.add(skull & ~c.ellipse(110 * k, 0, 96 * k, 67 * k), 0.9, 0.9)
    c.add(skull, 0.25, 0.25)
    c.add(c.ellipse(205 * k, 0, 30 * k, 55 * k), 0.5, 0.3)  # facial bones / mandible
    levels = np.linspace(240 * k, 860 * k, 24)
    for i, v in enumerate(levels):
        size = 1.0 + 0.4 * i / 23
        c.add(c.ellipse(v, 0, 10 * k, 13 * k * size), 0.6, 1.2)
    rib_levels = levels[7:19]
    ribs = []
    for i, v in enumerate(rib_levels):
        reach = (95 + 45 * np.sin(np.pi * (i + 1) / 13)) * k
        for s in (-1, 1):
            p0, p1, p2 = (v, s * 14 * k), (v - 15 * k, s * reach), (v + 55 * k, s * (reach - 35 * k))
            c.add(c.bar(p0, p1, 5 * k) | c.bar(p1, p2, 5 * k), 0.45, 0.55)
            ribs.append((i, s, p0, p1, p2))
    c.add(c.bar((330 * k, 0), (500 * k, 0), 11 * k), 0.8, 0.3)  # sternum
    for s in (-1, 1):
        c.add(c.bar((300 * k, s * 18 * k), (282 * k, s * 150 * k), 7 * k), 0.7, 0.4)  # clavicles
        scap = c.to_pixels([(320 * k, s * 70 * k), (330 * k, s * 145 * k), (480 * k, s * 95 * k)])
        c.add(polygon2mask(c.shape, scap), 0.25, 0.6)
        c.add(c.ellipse(305 * k, s * 165 * k, 20 * k, 20 * k), 0.9, 0.9)  # humeral heads
        c.add(c.bar((310 * k, s * 170 * k), (610 * k, s * 190 * k), 9 * k), 0.5, 0.5)
        c.add(c.ellipse(615 * k, s * 190 * k, 16 * k, 16 * k), 0.7, 0.7)  # elbows
        c.add(c.bar((620 * k, s * 190 * k), (860 * k, s * 205 * k), 8 * k), 0.4, 0.4)
        c.add(c.ellipse(900 * k, s * 210 * k, 40 * k, 22 * k), 0.45, 0.45)  # hands
        c.add(c.ellipse(880 * k, s * 95 * k, 60 * k, 55 * k) & ~c.ellipse(885 * k, s * 95 * k, 42 * k, 38 * k), 0.7, 0.8)
        c.add(c.ellipse(895 * k, s * 38 * k, 35 * k, 10 * k), 0.8, 1.3)  # sacroiliac joints
        c.add(c.ellipse(965 * k, s * 85 * k, 20 * k, 20 * k), 0.9, 0.8)  # femoral heads
        c.add(c.bar((970 * k, s * 88 * k), (1320 * k, s * 70 * k), 11 * k), 0.55, 0.5)
        c.add(c.ellipse(1335 * k, s * 70 * k, 24 * k, 26 * k), 1.0, 0.9)  # knees
        c.add(c.bar((1350 * k, s * 70 * k), (1690 * k, s * 65 * k), 10 * k), 0.5, 0.45)
        c.add(c.ellipse(1720 * k, s * 70 * k, 30 * k, 22 * k), 0.7, 0.6)  # ankles / feet
        c.add(c.ellipse(790 * k, s * 55 * k, 55 * k, 28 * k), 0.15, 0.55)  # kidneys
    c.add(c.ellipse(900 * k, 0, 55 * k, 30 * k), 0.7, 1.1)  # sacrum
    c.add(c.ellipse(1000 * k, 0, 12 * k, 22 * k), 0.8, 0.3)  # pubic symphysis
    c.add(c.ellipse(1010 * k, 0, 38 * k, 55 * k), 2.6, 1.6)  # bladder
    return {"levels": levels, "ribs": ribs, "k": k}


def _lesions(rng, cls: str, marks: dict) -> list[tuple[str, list, float, bool]]:
    """``[(class, polygon_mm, intensity, diffuse), ...]`` for one lesion class."""
    k, levels, ribs = marks["k"], marks["levels"], marks["ribs"]
    out = []
    if cls == "malignant":
        for _ in range(int(rng.integers(2, 7))):
            site = rng.choice(["spine", "rib", "rib", "sternum", "pelvis", "skull", "femur"])
            if site == "spine":
                v, u = float(rng.choice(levels[6:22])), rng.uniform(-6, 6) * k
            elif site == "rib":
                _, _, p0, p1, p2 = ribs[int(rng.integers(len(ribs)))]
                t = rng.uniform(0.2, 1.0)
                v, u = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
            elif site == "sternum":
                v, u = rng.uniform(340, 490) * k, 0.0
            elif site == "pelvis":
                v, u = 880 * k + rng.uniform(-40, 40) * k, rng.choice([-1, 1]) * rng.uniform(60, 130) * k
            elif site == "skull":
                a = rng.uniform(0, 2 * np.pi)
                v, u = 110 * k + 100 * k * np.sin(a), 72 * k * np.cos(a)
            else:
                v, u = rng.uniform(980, 1150) * k, rng.choice([-1, 1]) * 85 * k
            r = rng.uniform(8, 16) * k
            out.append((cls, _blob_polygon(rng, v, u, r, r * rng.uniform(0.8, 1.2)), rng.uniform(3.0, 6.0), False))
    elif cls == "degenerative":
        site = rng.choice(["shoulder", "knee", "lumbar"])
        v, u = {"shoulder": (300 * k, 150 * k), "knee": (1340 * k, 62 * k), "lumbar": (float(levels[-2]), 20 * k)}[site]
        r = rng.uniform(10, 14) * k
        intensity = rng.uniform(1.5, 2.2)
        for s in (-1, 1):
            out.append((cls, _blob_polygon(rng, v + rng.uniform(-4, 4), s * u, r, r * 0.8, 0.05), intensity, False))
    elif cls == "post_trauma":
        count = int(rng.integers(2, 5))
        side = rng.choice([-1, 1])
        first = int(rng.integers(0, 12 - count))
        t = rng.uniform(0.5, 0.95)
        for i in range(first, first + count):
            _, _, p0, p1, _ = next(r for r in ribs if r[0] == i and r[1] == side)
            v, u = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
            r = rng.uniform(5, 8) * k
            out.append((cls, _blob_polygon(rng, v, u, r, r * 1.3, 0.05, 10), rng.uniform(2.5, 3.5), False))
    else:  # infection_inflammation
        site = rng.choice(["elbow", "wrist", "knee", "ankle", "sternoclavicular"])
        s = rng.choice([-1, 1])
        v, u = {"elbow": (615 * k, s * 190 * k), "wrist": (860 * k, s * 205 * k), "knee": (1335 * k, s * 70 * k),
                "ankle": (1710 * k, s * 70 * k), "sternoclavicular": (300 * k, s * 25 * k)}[site]
        r = rng.uniform(25, 40) * k
        out.append((cls, _blob_polygon(rng, v, u, r, r * rng.uniform(0.6, 0.9), 0.18, 18), rng.uniform(1.3, 1.8), True))
    return out


def _mirror_cols(points_px: np.ndarray, width: int) -> np.ndarray:
    out = points_px.copy()
    out[:, 1] = (width - 1) - out[:, 1]
    return out


def make_bone_scan(
    rng: np.random.Generator,
    classes: tuple[str, ...] = (),
    *,
    shape: tuple[int, int] = DEFAULT_VIEW_SHAPE,
    pixel_mm: float = DEFAULT_PIXEL_MM,
    total_counts: float = 1.2e6,
) -> BoneScanPhantom:
    """Draw one whole-body bone scan.

    Args:
        rng: The case's random generator.
        classes: Lesion classes that must occur (others are added at random).
        shape: ``[H, W]`` of each view.
        pixel_mm: Pixel size in mm.
        total_counts: Expected counts of the anterior view.

    Returns:
        A :class:`BoneScanPhantom`.
    """
    c = _Canvas(shape, pixel_mm)
    k = rng.uniform(0.92, 1.04)
    marks = _skeleton(c, k)
    wanted = list(classes)
    for cls, p in zip(LESION_CLASSES, (0.35, 0.15, 0.3, 0.15)):
        if cls not in wanted and rng.random() < p:
            wanted.append(cls)
    lesions = []
    for cls in wanted:
        for name, poly_mm, intensity, diffuse in _lesions(rng, cls, marks):
            pix = np.round(c.to_pixels(poly_mm), 3)
            # Vertices as stored in the annotation (posterior seen from behind), rasterised exactly
            # as the loader does it.
            stored = {"anterior": pix, "posterior": np.round(_mirror_cols(pix, shape[1]), 3)}
            masks = {"anterior": polygon2mask(shape, stored["anterior"]),
                     "posterior": polygon2mask(shape, stored["posterior"])[:, ::-1].copy()}
            if not masks["anterior"].any() or not masks["posterior"].any():
                continue
            for view in VIEWS:
                m = masks[view].astype(np.float32)
                if diffuse:
                    m = ndimage.gaussian_filter(m, 1.5) * masks[view] + 0.3 * ndimage.gaussian_filter(m, 3.0)
                c.maps[view] += m * (intensity * (0.9 if view == "anterior" else 1.0))
            lesions.append({"class": name, "polygon_mm": poly_mm, "stored_px": stored, "masks": masks,
                            "mask_file": diffuse})
    views = {}
    scale = total_counts / float(ndimage.gaussian_filter(c.maps["anterior"], 1.0).sum())
    for view in VIEWS:
        expected = ndimage.gaussian_filter(c.maps[view], 1.0) * scale
        views[view] = np.clip(rng.poisson(expected), 0, 65535).astype(np.uint16)
    top = c.to_pixels([(270 * k, -180 * k), (700 * k, 180 * k)])
    y0, x0 = (int(np.floor(max(t, 0))) for t in top[0])
    y1, x1 = (int(np.ceil(min(t, lim))) for t, lim in zip(top[1], shape))
    return BoneScanPhantom(views, float(pixel_mm), lesions, (y0, max(x0, 0), y1, min(x1, shape[1])))


def _stored_box(box, width):
    y0, x0, y1, x1 = box
    return [int(y0), int(width - x1), int(y1), int(width - x0)]


def write_bone_scan(out_dir: Path, rngs: list[np.random.Generator]) -> dict:
    """Write ``<patient>/wholebody.dcm`` and, for labeled patients, ``annotation.json`` (+ mask PNGs).

    Every third patient (index % 3 == 2) is unlabeled (no annotation file). Labeled patients
    cycle through the four lesion classes so that every class occurs in four labeled patients.
    """
    from PIL import Image

    from tfmedseg.io.nm_planar import write_nm_wholebody

    truth = {}
    labeled_so_far = 0
    for index, rng in enumerate(rngs):
        labeled = index % 3 != 2
        classes = (LESION_CLASSES[labeled_so_far % len(LESION_CLASSES)],) if labeled else ()
        labeled_so_far += int(labeled)
        phantom = make_bone_scan(rng, classes)
        pid = f"BS{index + 1:04d}"
        folder = out_dir / pid
        write_nm_wholebody(phantom.views["anterior"], phantom.views["posterior"], folder / "wholebody.dcm",
                           pixel_spacing=(phantom.pixel_mm, phantom.pixel_mm), patient_id=pid, uid_seed=f"bone-{pid}")
        truth[pid] = {"labeled": labeled, "classes": [les["class"] for les in phantom.lesions]}
        if not labeled:
            continue
        width = phantom.views["anterior"].shape[1]
        annotation = {"patient_id": pid, "views": {}}
        for view in VIEWS:
            box = list(phantom.chest_box) if view == "anterior" else _stored_box(phantom.chest_box, width)
            entries = []
            for j, les in enumerate(phantom.lesions):
                if les["mask_file"]:
                    name = f"masks/{view}_{j:02d}.png"
                    stored = les["masks"][view] if view == "anterior" else les["masks"][view][:, ::-1]
                    (folder / "masks").mkdir(exist_ok=True)
                    Image.fromarray(stored.astype(np.uint8) * 255).save(folder / name)
                    entries.append({"class": les["class"], "mask": name})
                else:
                    entries.append({"class": les["class"], "polygon": [[float(x), float(y)] for y, x in les["stored_px"][view]]})
            annotation["views"][view] = {"chest_box": box, "lesions": entries}
        (folder / "annotation.json").write_text(json.dumps(annotation, indent=1) + "\n")
    return truth
