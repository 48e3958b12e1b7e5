"""Fixtures of the viewer tests: a root folder with a phantom CT (NIfTI and DICOM), a models folder
with an exported seed-002 style cascade (two hand-set 3-slice threshold networks, so the labels are
known), and the Starlette test client.

The phantom (canonical ``[D, H, W] = [6, 16, 20]``, 2.5 x 0.8 x 0.8 mm): air (-1000 HU), a liver
block at 70 HU holding a 180 HU tumour, and a small 70 HU blob apart from the liver. The cascade's
liver network calls ``HU > 20`` liver (its largest component is kept), the tumour network
``HU > 120`` tumour inside the liver.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import tfmedseg  # noqa: F401  (before TensorFlow)

SPACING = (2.5, 0.8, 0.8)
LIVER = (slice(2, 6), slice(2, 12), slice(2, 14))
TUMOUR = (slice(2, 4), slice(4, 8), slice(4, 8))
BLOB = (slice(0, 2), slice(14, 16), slice(16, 20))


def phantom_ct(shift: int = 0) -> np.ndarray:
    ct = np.full((6, 16, 20), -1000.0, np.float32)
    ct[LIVER] = 70.0
    ct[TUMOUR] = 180.0
    ct[BLOB] = 70.0
    return np.roll(ct, shift, axis=2)


def expected_labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros((6, 16, 20), np.uint8)
    labels[LIVER] = 1
    labels[TUMOUR] = 2
    return np.roll(labels, shift, axis=2)


from cascade_networks import threshold_network  # noqa: E402  (tests/support)
from nifti_files import write_nifti  # noqa: E402  (tests/support)


def export_threshold_cascade(models_root, name: str = "liver_ct_2d3d", version: int = 1):
    """A cascade SavedModel written by :func:`tfmedseg.export.savedmodel.export_cascade_savedmodel`."""
    from tfmedseg.export.savedmodel import export_cascade_savedmodel
    from tfmedseg.inference.spec import CascadeConfig, ServingSpec

    spec = ServingSpec(mode="2.5d", context_slices=3, batch_size=8, largest_component_labels=(1,))
    return export_cascade_savedmodel(threshold_network(0.55), threshold_network(0.8), models_root / name / str(version),
                                     liver_spec=spec, tumour_spec=spec, model_name=name, cascade=CascadeConfig())



@pytest.fixture(scope="session")
def viewer_data(tmp_path_factory):
    """``root`` (scans: ct.nii.gz, shifted.nii.gz, dicom/ct/, a run dir), ``models`` (the cascade), ``outside``."""
    from tfmedseg.io import Volume, canonical_affine, write_dicom_series

    base = tmp_path_factory.mktemp("viewer")
    root, models, outside = base / "root", base / "models", base / "outside"
    for folder in (root, models, outside):
        folder.mkdir()
    write_nifti(root / "ct.nii.gz", phantom_ct())
    write_nifti(root / "shifted.nii.gz", phantom_ct(shift=3))
    volume = Volume(phantom_ct(), SPACING, canonical_affine(SPACING, (10.0, -20.0, 30.0)), "CT")
    write_dicom_series(volume, root / "dicom" / "ct", series_number=3, patient_id="PHANTOM", uid_seed="viewer")
    run = root / "runs" / "quick"
    (run / "predictions").mkdir(parents=True)
    (run / "summary.json").write_text('{"liver_dice": 0.9}')
    (run / "per_case.csv").write_text("case,liver_dice\nct,0.9\n")
    (run / "summary.md").write_text("# Liver Dice\n")
    write_nifti(run / "predictions" / "ct.nii.gz", expected_labels().astype(np.float32))
    write_nifti(outside / "secret.nii.gz", phantom_ct())
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape.nii.gz").symlink_to(outside / "secret.nii.gz")
    model = export_threshold_cascade(models)
    return types.SimpleNamespace(root=root, models=models, outside=outside, model=model, base=base,
                                 expected=expected_labels, ct=phantom_ct, spacing=SPACING)


@pytest.fixture(scope="session")
def segmenters():
    """Loaded models shared by every test's viewer (a SavedModel loads in seconds)."""
    from tfmedseg.viewer.models import SegmenterCache

    return SegmenterCache()


@pytest.fixture()
def client_factory(viewer_data, segmenters, tmp_path):
    """``make(start_worker=True, max_upload_mb=...)`` -> a Starlette TestClient of a fresh viewer."""
    from starlette.testclient import TestClient

    from tfmedseg.viewer.app import ViewerConfig, create_app

    clients = []

    def make(start_worker: bool = True, max_upload_mb: float = 8.0):
        config = ViewerConfig(viewer_data.root, viewer_data.models, max_upload_mb=max_upload_mb,
                              work_dir=tmp_path / f"work{len(clients)}")
        client = TestClient(create_app(config, start_worker=start_worker, segmenters=segmenters))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
