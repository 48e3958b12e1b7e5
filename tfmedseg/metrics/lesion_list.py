"""The lesion list of one label map: connected components with volume, largest diameter and extent.

What a reader of a segmentation wants per lesion (the viewer's lesion table, a report): each
connected component of a binary mask, largest first, with

* ``voxels`` and ``volume_ml`` (voxels x prod(spacing) mm^3 / 1000);
* ``largest_diameter_mm``: the largest distance between two voxel centres of the component, in mm
  (the 3D analogue of RECIST's longest diameter; 0 for a single voxel);
* ``slices``: the first and last index along axis 0 (the axial slices it spans), ``bbox`` the
  ``[start, stop)`` index box per axis and ``center``: the voxel of the component nearest to its
  centroid (a place to jump to that always lies inside it).

Example:
    >>> m = np.zeros((3, 8, 8), bool); m[1, 1:4, 1] = True; m[0:2, 6, 6] = True
    >>> [(l["voxels"], l["largest_diameter_mm"]) for l in lesion_list(m, (2.0, 1.0, 1.0))]
    [(3, 2.0), (2, 2.0)]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from tfmedseg.validation import as_binary, check_spacing

__all__ = ["lesion_list", "largest_diameter_mm"]

#: Up to this many boundary points the diameter is an exact all-pairs maximum (else over the hull).
_PAIRWISE_LIMIT = 3000


def largest_diameter_mm(points_mm: np.ndarray) -> float:
    """Largest distance (mm) between any two of ``points_mm`` ``[N, 3]`` (0 for fewer than 2).

    The farthest pair lies on the convex hull, so large sets are reduced to its vertices first.
    """
    points = np.asarray(points_mm, dtype=np.float64)
    if len(points) < 2:
        return 0.0
    if len(points) > _PAIRWISE_LIMIT:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat (one slice) or collinear: the hull of a lower-dimensional set
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
    return float(pdist(points).max())


def lesion_list(mask, spacing, connectivity: int = 3) -> list[dict]:
    """Connected components of ``mask`` as lesion records, largest volume first.

    Args:
        mask: Binary mask ``[D, H, W]`` (e.g. ``labels == tumour``).
        spacing: Voxel size in mm along ``(D, H, W)``.
        connectivity: 1 (faces), 2 (edges) or 3 (corners, 26-connected; the default, as the
            largest-component post-processing of :mod:`tfmedseg.predict`).

    Returns:
        One dict per component: ``{"id", "voxels", "volume_ml", "largest_diameter_mm",
        "slices": [first, last], "bbox": [[start, stop] per axis], "center": [d, h, w]}``,
        ids 1.. in the returned order.
    """
    m = as_binary(mask, "mask")
    sp = check_spacing(spacing, m.ndim)
    components, n = ndimage.label(m, ndimage.generate_binary_structure(m.ndim, connectivity))
    if n == 0:
        return []
    voxel_ml = float(np.prod(sp)) / 1000.0
    boxes = ndimage.find_objects(components)
    records = []
    for index, box in enumerate(boxes, start=1):
        local = components[box] == index
        offset = np.array([s.start for s in box])
        coords = np.argwhere(local)
        # Only boundary voxels can be the ends of the longest chord.
        interior = ndimage.binary_erosion(local, ndimage.generate_binary_structure(m.ndim, 1), border_value=0)
        boundary = np.argwhere(local & ~interior)
        centroid = coords.mean(axis=0)
        nearest = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))] + offset
        records.append({
            "voxels": int(len(coords)),
            "volume_ml": float(len(coords) * voxel_ml),
            "largest_diameter_mm": largest_diameter_mm((boundary + offset) * sp),
            "slices": [int(box[0].start), int(box[0].stop - 1)],
            "bbox": [[int(s.start), int(s.stop)] for s in box],
            "center": [int(v) for v in nearest],
        })
    records.sort(key=lambda r: (-r["voxels"], r["slices"][0]))
    for i, record in enumerate(records, start=1):
        record["id"] = i
    return [{"id": r.pop("id"), **r} for r in records]
