"""The viewer's web application (Starlette): JSON API, slice transfer, downloads and the page.

API (every error is ``{"error": "<path>: <cause>"}`` with status 400, 404 or 413):

====================================== ===========================================================
``GET  /api/info``                     root, models folder, upload cap, views
``GET  /api/files?path=REL``           a folder under ``--root`` (NIfTI, DICOM folders, run dirs)
``GET  /api/models``                   exported models under ``--models`` (``metadata.json``)
``POST /api/open`` ``{"path"}``        open a NIfTI file or DICOM folder -> scan
``POST /api/upload?name=F``            raw body, a ``.nii``/``.nii.gz`` (or ``.zip`` of a DICOM
                                       folder), at most ``--max-upload-mb`` -> scan
``GET  /api/scans/ID``                 shape, spacing (mm), modality, units, labels and colours
``GET  /api/scans/ID/slice?view=V&index=K``  float32 image rows x cols, then uint8 labels (if any)
``POST /api/scans/ID/segment`` ``{"model"}`` queue a segmentation -> job
``GET  /api/jobs/JOB``                 state, stage, progress, queue position, error
``GET  /api/scans/ID/results``         per-label volumes (ml) and the lesion list
``POST /api/scans/ID/labels`` ``{"path"}`` show a label NIfTI on the scan (a run's prediction)
``POST /api/scans/ID/counts`` ``{"path"}`` SPECT counts for the SIRT plan (resampled onto the scan)
``POST /api/scans/ID/sirt``            ``{"lung_shunt", "target_normal_dose_gy"}`` -> TLR and plan
``GET  /api/scans/ID/download/label.nii.gz | seg.dcm | overlay.zip``
``GET  /api/run?path=REL``             a finished run directory: summary, tables, images, cases
``GET  /api/run/file?path=REL``        one PNG / CSV / Markdown / JSON file of a run
====================================== ===========================================================
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError, TfMedSegError
from tfmedseg.viewer import files, scans
from tfmedseg.viewer.jobs import Job, JobQueue
from tfmedseg.viewer.models import SegmenterCache, find_models

_log = logging.getLogger(__name__)

__all__ = ["ViewerConfig", "ViewerState", "create_app", "DEFAULT_MAX_UPLOAD_MB"]

DEFAULT_MAX_UPLOAD_MB = 512
STATIC_DIR = Path(__file__).with_name("static")
_RUN_FILE_SUFFIXES = (".png", ".csv", ".md", ".json", ".txt")
_UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".zip")


class ViewerConfig:
    """Settings of one viewer server.

    Args:
        root: The folder the file picker is confined to.
        models: Folder searched for exported models (``metadata.json``); None: no models.
        max_upload_mb: Largest upload accepted (MB, also the unpacked size of a zip).
        work_dir: Where uploads and downloads are written (a new temporary folder by default; it is
            never inside ``root``).
    """

    def __init__(self, root, models=None, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, work_dir=None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InvalidInputError("--root must be an existing folder", path=root)
        self.models = Path(models).resolve() if models is not None else None
        if self.models is not None and not self.models.is_dir():
            raise InvalidInputError("--models must be an existing folder", path=models)
        if not max_upload_mb > 0:
            raise InvalidInputError(f"must be > 0, got {max_upload_mb}", path="--max-upload-mb")
        self.max_upload_mb = float(max_upload_mb)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        #: True when the work folder is a temporary folder of ours (removed when the server stops).
        self.owns_work_dir = work_dir is None
        where = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())  # checked before anything is created
        real_work = where.resolve()
        if real_work == self.root or self.root in real_work.parents:
            raise InvalidInputError("the viewer's work folder must not lie inside --root (outputs never sit in an input)"
                                    + ("" if work_dir is not None else "; the temporary folder is there: pass --work-dir"),
                                    path=where)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="tfmedseg-viewer-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)


class ViewerState:
    """Open scans, the model list, loaded segmenters and the job queue of one server."""

    def __init__(self, config: ViewerConfig, *, start_worker: bool = True, segmenters: SegmenterCache | None = None):
        self.config = config
        self.scans = scans.ScanStore()
        self.segmenters = segmenters if segmenters is not None else SegmenterCache()
        self.jobs = JobQueue(self._segment, start=start_worker)
        self._uploads = 0
        self._lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        return find_models(self.config.models)

    def model(self, model_id: str):
        for entry in self.models():
            if entry["id"] == model_id:
                return entry
        raise InvalidInputError("no such model under --models (reload the model list)", path=model_id)

    # -- opening ----------------------------------------------------------------------------------
    def open_path(self, real: Path, shown: str, *, modality: str | None = None, series_uid: str | None = None) -> scans.Scan:
        from tfmedseg.predict import read_input

        if real.is_dir():
            self._check_folder_files(real, shown)
        elif files.entry_kind(real) == "dicom_file":  # one DICOM file: a whole-body bone scan (NM views)
            from tfmedseg.io.nm_planar import read_nm_wholebody

            return self.scans.add(scans.planar_volume(read_nm_wholebody(real), real), scans.source_name(real), shown)
        volume = read_input(real, modality=modality, series_uid=series_uid)
        if volume.array.ndim != 3:
            raise InvalidInputError(f"the viewer shows 3-D scans; this one has shape {volume.shape}", path=shown)
        return self.scans.add(volume, scans.source_name(real), shown)

    def _check_folder_files(self, folder: Path, shown: str) -> None:
        """A DICOM folder's files must not lead out of the root through symbolic links."""
        for child in folder.iterdir():
            if child.is_symlink():
                files.resolve_under_root(self.config.root, f"{shown}/{child.name}" if shown else child.name)

    def next_upload_dir(self) -> Path:
        with self._lock:
            self._uploads += 1
            path = self.config.work_dir / "uploads" / str(self._uploads)
        path.mkdir(parents=True)
        return path

    # -- segmentation (the job worker) ------------------------------------------------------------
    def _segment(self, job: Job) -> dict[str, Any]:
        """What ``python -m tfmedseg.predict`` does for one scan, through its functions."""
        from tfmedseg.predict import segment_scan

        scan = self.scans.get(job.scan_id)
        entry = self.model(job.model_id)
        if scan.planar:
            return self._detect_instances(job, scan, entry)
        if entry["kind"] == "whole_body":
            raise InvalidInputError("whole-body bone-scan models take planar NM views, not a 3-D scan; "
                                    "run python -m tfmedseg.predict on the NM DICOM file", path=entry["id"])
        job.report("loading the model", 0.05)
        segmenter = self.segmenters.get(entry.directory)
        job.report("segmenting", 0.2)
        labels = segment_scan(segmenter, scan.volume)
        job.report("measuring", 0.9)
        with scan.lock:
            scan.labels, scan.label_names, scan.model = labels, tuple(segmenter.spec.labels), segmenter.name
        return {"scan": scan.describe(), "volumes": scans.label_table(labels, scan.volume.spacing, scan.label_names)}

    def _detect_instances(self, job: Job, scan: scans.Scan, entry) -> dict[str, Any]:
        """A bone scan with the whole-body model: what ``predict`` does for an NM DICOM file."""
        from tfmedseg.inference.bone_scan import detect_bone_scan_instances

        if entry["kind"] != "whole_body":
            raise InvalidInputError(f"{scan.name} is a whole-body bone scan: segment it with a whole-body (seed 001) "
                                    "model", path=entry["id"])
        job.report("detecting lesions", 0.2)
        per_view, masks = detect_bone_scan_instances(entry.directory, scans.planar_views(scan.volume))
        job.report("measuring", 0.9)
        labels, instances = scans.instance_labels(scan.volume.shape, per_view, masks, scan.volume.meta["views"])
        with scan.lock:
            scan.labels, scan.label_names = labels, ("background", *entry["labels"])
            scan.model, scan.instances = entry["name"], instances
        return {"scan": scan.describe(), "instances": len(instances)}

    # -- results ----------------------------------------------------------------------------------
    def results(self, scan: scans.Scan) -> dict[str, Any]:
        if scan.labels is None:
            return {"volumes": [], "lesions": [], "instances": [], "segmented": False}
        if scan.planar:
            return {"segmented": True, "model": scan.model, "volumes": [], "lesions": [], "instances": scan.instances or [],
                    "sirt_possible": False}
        return {"instances": [],
            "segmented": True, "model": scan.model,
            "volumes": scans.label_table(scan.labels, scan.volume.spacing, scan.label_names),
            "lesions": scans.lesion_table(scan.labels, scan.volume.spacing, scan.label_names),
            "sirt_possible": scan.counts is not None or scan.volume.modality == "NM",
        }

    def download(self, scan: scans.Scan, what: str) -> tuple[bytes, str, str]:
        """``(content, media type, file name)`` of a download."""
        from tfmedseg.io.nifti import write_nifti

        if scan.labels is None:
            raise InvalidInputError("nothing to download yet: segment the scan first", path=scan.name)
        if scan.planar:
            if what != "instances.json":
                raise InvalidInputError("a bone scan's result is its instance list: download instances.json", path=what)
            body = {"input": scan.path, "model": scan.model, "instances": scan.instances}
            return json.dumps(body, indent=2).encode(), "application/json", f"{scan.name}_instances.json"
        out = Path(tempfile.mkdtemp(prefix="download-", dir=self.config.work_dir))
        try:
            if what == "label.nii.gz":
                path = write_nifti(scan.labels, out / "label.nii.gz", reference=scan.volume, dtype=np.uint8)
                return path.read_bytes(), "application/gzip", f"{scan.name}_label.nii.gz"
            if what not in ("seg.dcm", "overlay.zip"):
                raise InvalidInputError("unknown download; allowed: label.nii.gz, seg.dcm, overlay.zip (instances.json "
                                        "for bone scans)", path=what)
            if scan.volume.meta.get("format") != "dicom":
                raise InvalidInputError("the DICOM-SEG and the overlay series need a DICOM source series; for a NIfTI "
                                        "scan download the label map (label.nii.gz)", path=scan.name)
            from tfmedseg.io.segmentation_outputs import write_dicom_outputs

            notes = write_dicom_outputs(scan.volume, scan.labels, out, label_names=scan.label_names,
                                        name=scan.model or "tfmedseg", dicom_seg=(what == "seg.dcm"))
            if what == "seg.dcm":
                if not (out / "seg.dcm").is_file():
                    raise InvalidInputError("; ".join(notes) or "no DICOM-SEG was written", path=scan.name)
                return (out / "seg.dcm").read_bytes(), "application/dicom", f"{scan.name}_seg.dcm"
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted((out / "overlay").rglob("*")):
                    if path.is_file():
                        archive.write(path, f"overlay/{path.relative_to(out / 'overlay').as_posix()}")
            return buffer.getvalue(), "application/zip", f"{scan.name}_overlay.zip"
        finally:
            shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Run directories


def describe_run(root: Path, rel: str) -> dict[str, Any]:
    """Summary, tables (CSV rows), Markdown, images and openable NIfTI files of a run directory."""
    real = files.resolve_under_root(root, rel)
    if not files.is_run_directory(real):
        raise InvalidInputError("not a finished experiment run directory (no summary.json or per_case.csv)", path=rel)
    here = files.relative_to_root(root, real)
    out: dict[str, Any] = {"path": here, "name": real.name, "summary": None, "tables": [], "markdown": [], "images": [],
                           "volumes": []}
    if (real / "summary.json").is_file():
        try:
            out["summary"] = json.loads((real / "summary.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out["summary"] = {"error": f"summary.json unreadable: {exc}"}
    for path in sorted(real.glob("*.csv")):
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        out["tables"].append({"name": path.name, "path": f"{here}/{path.name}", "header": rows[0] if rows else [],
                              "rows": rows[1:501]})
    for path in sorted(real.glob("*.md")):
        out["markdown"].append({"name": path.name, "text": path.read_text(errors="replace")[:200_000]})
    for depth_glob in ("*.png", "*/*.png", "*/*/*.png"):
        for path in sorted(real.glob(depth_glob)):
            out["images"].append({"name": path.relative_to(real).as_posix(), "path": files.relative_to_root(root, path)})
    for depth_glob in ("*.nii.gz", "*/*.nii.gz", "*/*.nii", "*/*/*.nii.gz"):
        for path in sorted(real.glob(depth_glob)):
            out["volumes"].append({"name": path.relative_to(real).as_posix(), "path": files.relative_to_root(root, path)})
    out["images"], out["volumes"] = out["images"][:200], out["volumes"][:500]
    return out


# ---------------------------------------------------------------------------------------------------
# The Starlette application


def create_app(config: ViewerConfig, *, start_worker: bool = True, segmenters: SegmenterCache | None = None):
    """The ASGI application of one viewer (``app.state.viewer`` is its :class:`ViewerState`).

    Args:
        config: The server's settings.
        start_worker: Start the job worker now (tests start it later to see jobs wait).
        segmenters: Loaded models to share between applications (tests); default: a new cache.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    state = ViewerState(config, start_worker=start_worker, segmenters=segmenters)

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def guarded(handler):
        """User errors become ``{"error": ...}`` with status 400 (404 for unknown ids)."""
        import inspect

        if inspect.iscoroutinefunction(handler):
            async def run_async(request: Request):
                try:
                    return await handler(request)
                except TfMedSegError as exc:
                    return error(str(exc), 404 if "no such" in str(exc) else 400)
            return run_async

        def run(request: Request):
            try:
                return handler(request)
            except TfMedSegError as exc:
                return error(str(exc), 404 if "no such" in str(exc) else 400)
        return run

    async def json_body(request: Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"request body is not JSON: {exc}", path=str(request.url.path)) from exc
        if not isinstance(body, dict):
            raise InvalidInputError("request body must be a JSON object", path=str(request.url.path))
        return body

    def index(request: Request):
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    def info(request: Request):
        import tfmedseg

        return JSONResponse({"root": str(config.root), "models_root": str(config.models) if config.models else None,
                             "max_upload_mb": config.max_upload_mb, "views": list(scans.VIEWS),
                             "version": tfmedseg.__version__})

    def list_files(request: Request):
        return JSONResponse(files.list_directory(config.root, request.query_params.get("path", "")))

    def list_models(request: Request):
        return JSONResponse({"models": [dict(e) for e in state.models()]})

    async def open_scan(request: Request):
        body = await json_body(request)
        rel = str(body.get("path", ""))
        real = files.resolve_under_root(config.root, rel)
        kind = files.entry_kind(real)
        if kind == "run":
            return JSONResponse({"run": describe_run(config.root, rel)})
        if kind not in ("nifti", "dicom", "dicom_file") and not real.is_dir():
            raise InvalidInputError("open a NIfTI file (.nii, .nii.gz), a folder of DICOM files, a whole-body bone-scan "
                                    "DICOM file or a run directory", path=rel)
        from starlette.concurrency import run_in_threadpool

        scan = await run_in_threadpool(state.open_path, real, files.relative_to_root(config.root, real),
                                       modality=body.get("modality") or None, series_uid=body.get("series_uid") or None)
        return JSONResponse({"scan": scan.describe()})

    async def upload(request: Request):
        name = Path(str(request.query_params.get("name", ""))).name
        if not name.lower().endswith(_UPLOAD_SUFFIXES):
            raise InvalidInputError("upload a .nii or .nii.gz file, or a .zip of one DICOM series folder", path=name or "name")
        cap = config.max_upload_bytes
        declared = request.headers.get("content-length")
        limit_text = f"uploads are limited to {config.max_upload_mb:g} MB = {cap} bytes (--max-upload-mb)"
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return error(f"{name}: {int(declared)} bytes is too large; {limit_text}", 413)
        folder = state.next_upload_dir()
        target = folder / name
        received = 0
        with open(target, "wb") as handle:
            async for chunk in request.stream():
                received += len(chunk)
                if received > cap:
                    handle.close()
                    shutil.rmtree(folder, ignore_errors=True)
                    return error(f"{name}: too large; {limit_text}", 413)
                handle.write(chunk)
        if received == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidInputError("the upload is empty", path=name)
        if name.lower().endswith(".zip"):
            target = _unpack_dicom_zip(target, folder / "series", cap)
        from starlette.concurrency import run_in_threadpool

        try:
            scan = await run_in_threadpool(state.open_path, target, f"upload:{name}")
        except TfMedSegError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidInputError(exc.reason, path=name) from exc
        return JSONResponse({"scan": scan.describe()})

    def scan_info(request: Request):
        return JSONResponse({"scan": state.scans.get(request.path_params["scan"]).describe()})

    def list_scans(request: Request):
        return JSONResponse({"scans": [s.describe() for s in state.scans.all()]})

    def slice_data(request: Request):
        scan = state.scans.get(request.path_params["scan"])
        view = request.query_params.get("view", "axial")
        try:
            index = int(request.query_params.get("index", "0"))
        except ValueError as exc:
            raise InvalidInputError("index must be an integer", path="index") from exc
        image = np.ascontiguousarray(scans.view_slice(scan.volume.array, view, index), dtype="<f4")
        labels = scan.labels
        body = image.tobytes()
        if labels is not None:
            body += np.ascontiguousarray(scans.view_slice(labels, view, index), dtype=np.uint8).tobytes()
        rows, cols = image.shape
        sy, sx = scans.view_spacing(scan.volume.spacing, view)
        return Response(body, media_type="application/octet-stream", headers={
            "X-Rows": str(rows), "X-Cols": str(cols), "X-Has-Labels": "1" if labels is not None else "0",
            "X-Row-Spacing": f"{sy:.6g}", "X-Col-Spacing": f"{sx:.6g}", "Cache-Control": "no-store"})

    async def segment(request: Request):
        body = await json_body(request)
        scan = state.scans.get(request.path_params["scan"])
        entry = state.model(str(body.get("model", "")))
        job = state.jobs.submit(scan.id, entry["id"])
        return JSONResponse({"job": state.jobs.describe(job)}, status_code=202)

    def job_info(request: Request):
        job = state.jobs.get(request.path_params["job"])
        if job is None:
            return error(f"{request.path_params['job']}: no such job", 404)
        return JSONResponse({"job": state.jobs.describe(job)})

    def results(request: Request):
        return JSONResponse(state.results(state.scans.get(request.path_params["scan"])))

    async def set_labels(request: Request):
        from tfmedseg.io.nifti import read_nifti

        body = await json_body(request)
        scan = state.scans.get(request.path_params["scan"])
        rel = str(body.get("path", ""))
        label_volume = read_nifti(files.resolve_under_root(config.root, rel), "SEG")
        if label_volume.shape != scan.volume.shape:
            raise InvalidInputError(f"label map shape {label_volume.shape} differs from the scan's {scan.volume.shape}", path=rel)
        array = np.asarray(label_volume.array)
        if array.size and (array.min() < 0 or array.max() > 255 or not np.all(array == np.round(array))):
            raise InvalidInputError("not a label map (values must be integers 0..255)", path=rel)
        names = body.get("labels") or ["background", "liver", "tumour"][: max(int(array.max()) + 1, 2)]
        with scan.lock:
            scan.labels, scan.label_names, scan.model = array.astype(np.uint8), tuple(map(str, names)), Path(rel).name
        return JSONResponse({"scan": scan.describe()})

    async def set_counts(request: Request):
        body = await json_body(request)
        scan = state.scans.get(request.path_params["scan"])
        rel = str(body.get("path", ""))
        real = files.resolve_under_root(config.root, rel)
        from starlette.concurrency import run_in_threadpool
        from tfmedseg.predict import read_input

        counts = await run_in_threadpool(read_input, real, modality=body.get("modality") or "NM")
        scan.counts = scans.counts_on_grid(counts, scan.volume)
        return JSONResponse({"scan": scan.describe()})

    async def sirt(request: Request):
        body = await json_body(request)
        scan = state.scans.get(request.path_params["scan"])
        try:
            lung_shunt = float(body.get("lung_shunt", 0.0))
            dose = float(body.get("target_normal_dose_gy", 40.0))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"lung_shunt and target_normal_dose_gy must be numbers: {exc}", path="sirt") from exc
        return JSONResponse({"sirt": scans.sirt_plan(scan, lung_shunt=lung_shunt, target_normal_dose_gy=dose)})

    def download(request: Request):
        scan = state.scans.get(request.path_params["scan"])
        content, media, filename = state.download(scan, request.path_params["what"])
        return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    def run_info(request: Request):
        return JSONResponse({"run": describe_run(config.root, request.query_params.get("path", ""))})

    def run_file(request: Request):
        rel = request.query_params.get("path", "")
        real = files.resolve_under_root(config.root, rel)
        if not real.is_file() or not real.name.lower().endswith(_RUN_FILE_SUFFIXES):
            raise InvalidInputError(f"only files ending in {', '.join(_RUN_FILE_SUFFIXES)} are served", path=rel)
        return FileResponse(real)

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/info", guarded(info)),
        Route("/api/files", guarded(list_files)),
        Route("/api/models", guarded(list_models)),
        Route("/api/open", guarded(open_scan), methods=["POST"]),
        Route("/api/upload", guarded(upload), methods=["POST"]),
        Route("/api/scans", guarded(list_scans)),
        Route("/api/scans/{scan}", guarded(scan_info)),
        Route("/api/scans/{scan}/slice", guarded(slice_data)),
        Route("/api/scans/{scan}/segment", guarded(segment), methods=["POST"]),
        Route("/api/scans/{scan}/results", guarded(results)),
        Route("/api/scans/{scan}/labels", guarded(set_labels), methods=["POST"]),
        Route("/api/scans/{scan}/counts", guarded(set_counts), methods=["POST"]),
        Route("/api/scans/{scan}/sirt", guarded(sirt), methods=["POST"]),
        Route("/api/scans/{scan}/download/{what}", guarded(download)),
        Route("/api/jobs/{job}", guarded(job_info)),
        Route("/api/run", guarded(run_info)),
        Route("/api/run/file", guarded(run_file)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.jobs.stop()
        if config.owns_work_dir:
            shutil.rmtree(config.work_dir, ignore_errors=True)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.viewer = state
    return app


def _unpack_dicom_zip(archive_path: Path, out_dir: Path, cap: int) -> Path:
    """Unpack an uploaded zip of one DICOM folder, refusing absolute / ``..`` members and zip bombs."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as exc:
        raise InvalidInputError(f"not a zip file: {exc}", path=archive_path.name) from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > cap:
            raise InvalidInputError(f"unpacks to {total / (1024 * 1024):.1f} MB, over the upload limit of "
                                    f"{cap / (1024 * 1024):g} MB", path=archive_path.name)
        out_dir.mkdir(parents=True)
        for member in members:
            name = member.filename
            parts = Path(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise InvalidInputError(f"member {name!r} would be written outside its folder; refused", path=archive_path.name)
            # every file of the series goes flat into one folder (the DICOM reader reads one folder)
            target = out_dir / f"{len(list(out_dir.iterdir())):05d}_{Path(name).name}"
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    archive_path.unlink()
    return out_dir

