"""End-to-end check of the viewer in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

``python tests/viewer/browser_check.py [--work-dir DIR] [--screenshots docs/images] [--chromium /usr/bin/chromium]``
(also run by the slow test ``tests/viewer/test_browser.py``). It

1. writes two abdominal CT phantoms (``tfmedseg.datasets.phantoms.abdomen``, cases 0 and 1) as NIfTI
   under a root folder and exports a seed-002 liver -> tumour cascade SavedModel with
   :func:`tfmedseg.export.savedmodel.export_cascade_savedmodel` (two hand-set 3-slice threshold
   networks, so that the test does not depend on training: HU > 20 liver, largest component, HU > 120
   tumour inside it);
2. runs :func:`tfmedseg.predict.predict_file` on both scans (the reference);
3. starts ``python -m tfmedseg.viewer --root ... --models ... --port 0`` as a user would, on loopback;
4. in two browser sessions at once opens one scan each, starts both segmentations (the second waits in
   the queue), and checks in each session: the volume table equals predict's figures; the axial and
   coronal views (screenshots) show the overlay colour of predict's labels at phantom-liver voxels
   (green liver) and no overlay in the lungs; the views' aspect ratio follows the voxel spacing; a
   click on a lesion row jumps to its slice; the downloaded label NIfTI equals predict's output.

Exits 0 when every check passes, 1 with the failed check otherwise.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
OPACITY = 0.4  # the page's default overlay opacity
ABDOMEN = (40.0, 400.0)  # the page's default CT window (level, width)
GREEN, RED = (0, 255, 0), (255, 0, 0)


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))  # standalone runs
from cascade_networks import threshold_network  # noqa: E402  (tests/support)


def prepare(work: Path) -> dict:
    """Root with two phantom CTs, a models folder with the cascade, predict's reference outputs."""
    import tfmedseg  # noqa: F401
    from tfmedseg.datasets.phantoms import case_rng
    from tfmedseg.datasets.phantoms._nifti import save_nifti
    from tfmedseg.datasets.phantoms.abdomen import make_abdomen
    from tfmedseg.export.savedmodel import export_cascade_savedmodel
    from tfmedseg.inference.spec import CascadeConfig, ServingSpec
    from tfmedseg.predict import load_segmenter, predict_file

    root, models, reference = work / "root", work / "models", work / "reference"
    for folder in (root, models, reference):
        folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    for index in (0, 1):
        phantom = make_abdomen(case_rng(0, index), index)
        name = f"phantom-ct-{index}.nii.gz"
        if not (root / name).exists():
            save_nifti(phantom.ct, root / name, phantom.spacing, phantom.origin_lps)
        cases[name] = phantom
    model = models / "liver_ct_2d3d" / "1"
    if not model.exists():
        spec = ServingSpec(mode="2.5d", context_slices=3, batch_size=16, largest_component_labels=(1,))
        export_cascade_savedmodel(threshold_network(0.55), threshold_network(0.8), model, liver_spec=spec,
                                  tumour_spec=spec, model_name="liver_ct_2d3d", cascade=CascadeConfig())
    segmenter = load_segmenter(model)
    results = {}
    for name in cases:
        out = reference / name.replace(".nii.gz", "_label.nii.gz")
        results[name] = predict_file(segmenter, root / name, out, overwrite=True)
    return {"root": root, "models": models, "cases": cases, "predict": results}


def start_server(root: Path, models: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m tfmedseg.viewer`` on a free loopback port; returns the process and its address."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "tfmedseg.viewer", "--root", str(root), "--models", str(models),
                             "--port", "0"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root.parent))
    deadline = time.time() + 300
    while time.time() < deadline:
        text = log_path.read_text()
        found = re.search(r"open (http://127\.0\.0\.1:\d+/)", text)
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"the viewer exited with {proc.returncode}:\n{text}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the viewer did not start within 300 s:\n{log_path.read_text()}")


def _grey(hu: float) -> float:
    level, width = ABDOMEN
    return min(max((hu - (level - width / 2)) / width, 0.0), 1.0) * 255


def expected_rgb(hu: float, label: int) -> np.ndarray:
    grey = np.array([_grey(hu)] * 3)
    if label == 0:
        return grey
    colour = np.array(GREEN if label == 1 else RED, float)
    return (1 - OPACITY) * grey + OPACITY * colour


def _canvas_pixels(page, view: str) -> np.ndarray:
    from PIL import Image

    png = page.locator(f"#view-{view}").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)


def _show_slice(page, view: str, index: int) -> None:
    page.evaluate("([view, index]) => { const s = document.getElementById(`slider-${view}`); s.value = index; "
                  "s.dispatchEvent(new Event('input')); }", [view, index])
    page.wait_for_function("([view, index]) => (document.getElementById(`view-${view}`).dataset.rendered || '')"
                           ".split('/')[1] === String(index)", arg=[view, index])


def check_view(page, view: str, index: int, ct: np.ndarray, labels: np.ndarray, truth_liver: np.ndarray,
               lungs: np.ndarray, spacing, rng) -> dict:
    """Pixel colours of one view against predict's labels at phantom-liver and lung voxels."""
    from tfmedseg.viewer.scans import view_slice, view_spacing

    _show_slice(page, view, index)
    pixels = _canvas_pixels(page, view)
    image, lab = view_slice(ct, view, index), view_slice(labels, view, index)
    liver, lung = view_slice(truth_liver, view, index), view_slice(lungs, view, index)
    rows, cols = image.shape
    height, width = pixels.shape[:2]
    row_mm, col_mm = view_spacing(spacing, view)
    aspect_expected, aspect = (cols * col_mm) / (rows * row_mm), width / height
    assert abs(aspect / aspect_expected - 1) < 0.02, f"{view}: aspect {aspect:.3f}, spacing says {aspect_expected:.3f}"

    def pixel(r, c):
        return pixels[int((r + 0.5) * height / rows), int((c + 0.5) * width / cols)]

    from scipy import ndimage

    inner_liver = ndimage.binary_erosion(liver, iterations=2) & (lab == 1)
    candidates = np.argwhere(inner_liver)
    assert len(candidates) >= 20, f"{view} {index}: only {len(candidates)} inner liver pixels"
    picks = candidates[rng.choice(len(candidates), size=min(40, len(candidates)), replace=False)]
    worst = 0.0
    for r, c in picks:
        got, want = pixel(r, c), expected_rgb(float(image[r, c]), 1)
        worst = max(worst, float(np.abs(got - want).max()))
        assert got[1] > got[0] + 40 and got[1] > got[2] + 40, f"{view} liver pixel ({r}, {c}) is not green: {got}"
    assert worst <= 4.0, f"{view}: liver overlay colours differ from predict's labels by up to {worst}"
    lung_px = np.argwhere(ndimage.binary_erosion(lung, iterations=1) & (lab == 0))
    for r, c in lung_px[rng.choice(len(lung_px), size=min(20, len(lung_px)), replace=False)] if len(lung_px) else []:
        got = pixel(r, c)
        assert np.abs(got - expected_rgb(float(image[r, c]), 0)).max() <= 4.0, f"{view}: overlay in the lung at ({r}, {c}): {got}"
    return {"view": view, "index": int(index), "liver_pixels_checked": int(len(picks)), "lung_pixels_checked":
            int(min(20, len(lung_px))), "max_colour_error": worst, "canvas": [int(width), int(height)]}


def check_controls(page, axial: int, ct: np.ndarray, labels: np.ndarray, liver: np.ndarray) -> dict:
    """Mouse wheel and arrow keys move the slice; hiding a label removes its colour; a preset changes the grey."""
    _show_slice(page, "axial", axial)
    box = page.locator("#view-axial").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # focus, crosshair: same axial slice
    page.mouse.wheel(0, 120)
    page.wait_for_function("(d) => document.getElementById('slider-axial').value === String(d)", arg=axial + 1)
    page.keyboard.press("ArrowDown")
    page.wait_for_function("(d) => document.getElementById('slider-axial').value === String(d)", arg=axial)
    page.wait_for_function("(d) => (document.getElementById('view-axial').dataset.rendered || '').split('/')[1] === String(d)",
                           arg=axial)
    r, c = np.argwhere((labels[axial] == 1) & liver[axial])[len(np.argwhere((labels[axial] == 1) & liver[axial])) // 2]
    rows, cols = ct.shape[1:]

    def pixel():
        pixels = _canvas_pixels(page, "axial")
        return pixels[int((r + 0.5) * pixels.shape[0] / rows), int((c + 0.5) * pixels.shape[1] / cols)]

    coloured = pixel()
    page.uncheck("#label-toggles input[data-label='1']")
    page.wait_for_function("() => (document.getElementById('view-axial').dataset.rendered || '').endsWith('/1')")
    hidden = pixel()
    assert np.abs(hidden - expected_rgb(float(ct[axial, r, c]), 0)).max() <= 4, f"hidden liver still coloured: {hidden}"
    page.check("#label-toggles input[data-label='1']")
    page.select_option("#preset-select", "bone")
    page.wait_for_function("() => (document.getElementById('view-axial').dataset.rendered || '').includes('/400/1800/')")
    bone = pixel()
    grey_bone = min(max((float(ct[axial, r, c]) - (400 - 900)) / 1800, 0), 1) * 255
    assert np.abs(bone - ((1 - OPACITY) * grey_bone + OPACITY * np.array(GREEN))).max() <= 4, f"bone window: {bone}"
    page.select_option("#preset-select", "abdomen")
    page.wait_for_function("() => (document.getElementById('view-axial').dataset.rendered || '').includes('/40/400/')")
    return {"wheel_and_keys": "ok", "liver_pixel": coloured.tolist(), "liver_hidden": hidden.tolist(), "bone_window": bone.tolist()}


def run(work: Path, screenshots: Path | None = None, chromium: str = "/usr/bin/chromium") -> dict:
    """Every check; returns what was measured (raises AssertionError on a failed check)."""
    import nibabel as nib
    from playwright.sync_api import sync_playwright

    t0 = time.time()
    data = prepare(work)
    prepared = time.time() - t0
    proc, url = start_server(data["root"], data["models"], work / "viewer.log")
    report: dict = {"url": url, "prepare_seconds": round(prepared, 1), "sessions": {}}
    rng = np.random.default_rng(0)
    names = list(data["cases"])
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            pages = {}
            for name in names:  # two independent sessions (separate browser contexts)
                context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                page.click(f"#file-list li[data-path='{name}']")
                page.wait_for_function("(name) => (document.getElementById('scan-info').textContent || '').startsWith(name)",
                                       arg=name)
                page.uncheck("#crosshair")
                pages[name] = page
            for page in pages.values():  # both requests before either is done
                page.click("#segment-button")
            seen = {name: set() for name in names}
            deadline = time.time() + 300
            while time.time() < deadline and not all("done" in s or "error" in s for s in seen.values()):
                for name, page in pages.items():
                    seen[name].add(page.get_attribute("#job-status", "data-state"))
                time.sleep(0.05)
            for name, page in pages.items():
                assert "done" in seen[name], f"{name}: job states {seen[name]}: {page.inner_text('#job-status')}"
                page.wait_for_selector("#volume-table tbody tr")
            assert any("queued" in s for s in seen.values()), f"no request waited in the queue: {seen}"

            for name, page in pages.items():
                phantom, reference = data["cases"][name], data["predict"][name]
                labels, ct = reference["labels"], phantom.ct.astype(np.float32)
                session = {"job_states": sorted(s for s in seen[name] if s), "job": page.inner_text("#job-status")}
                # volume table == predict's figures
                rows = page.eval_on_selector_all("#volume-table tbody tr", "rows => rows.map(r => [r.dataset.name, "
                                                 "+r.dataset.voxels, +r.dataset.ml, r.cells[2].textContent])")
                table = {n: (v, ml) for n, v, ml, _ in rows}
                assert set(table) == set(reference["volumes_ml"]), (table, reference["volumes_ml"])
                for n, v, ml, text in rows:
                    voxels, ref_ml = reference["volumes_ml"][n]
                    assert v == voxels and abs(ml - ref_ml) <= 1e-9 * max(1.0, ref_ml), (n, v, ml, voxels, ref_ml)
                    assert text == f"{ref_ml:.2f}", (text, ref_ml)
                session["volumes_ml"] = {n: round(ml, 2) for n, (v, ml) in table.items()}
                # overlay colours in the axial and coronal views
                liver = phantom.masks["liver"] & ~phantom.masks["tumours"]
                axial = int(np.argmax((liver & (labels == 1)).sum(axis=(1, 2))))
                coronal = int(np.argmax((liver & (labels == 1)).sum(axis=(0, 2))))
                session["axial"] = check_view(page, "axial", axial, ct, labels, liver, phantom.masks["lungs"],
                                              phantom.spacing, rng)
                session["coronal"] = check_view(page, "coronal", coronal, ct, labels, liver, phantom.masks["lungs"],
                                                phantom.spacing, rng)
                if name == names[0]:
                    session["controls"] = check_controls(page, axial, ct, labels, liver)
                # lesion list: click the first row -> the axial slider is at its slice
                lesions = page.locator("#lesion-table tbody tr")
                session["lesions"] = lesions.count()
                if lesions.count():
                    center = [int(v) for v in lesions.first.get_attribute("data-center").split(",")]
                    lesions.first.click()
                    page.wait_for_function("(d) => document.getElementById('slider-axial').value === String(d)", arg=center[0])
                    assert labels[tuple(center)] == 2, f"lesion centre {center} is not tumour"
                # download == predict's output
                with page.expect_download() as info:
                    page.click("#download-label")
                target = work / f"download-{name}"
                info.value.save_as(target)
                ours, theirs = nib.load(target), nib.load(reference["written"][0])
                np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
                np.testing.assert_allclose(ours.affine, theirs.affine)
                session["download"] = f"{info.value.suggested_filename} == predict's {reference['written'][0].name}"
                report["sessions"][name] = session
                if screenshots is not None and name == names[0]:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    _show_slice(page, "axial", axial)
                    _show_slice(page, "coronal", coronal)
                    page.check("#crosshair")
                    page.evaluate("document.querySelector('main').scrollTop = 0")
                    box = page.locator("#view-axial").bounding_box()  # the cursor read-out over a liver voxel
                    r, c = np.argwhere((labels[axial] == 1) & liver[axial])[0]
                    page.mouse.move(box["x"] + (c + 0.5) * box["width"] / ct.shape[2], box["y"] + (r + 0.5) * box["height"] / ct.shape[1])
                    page.wait_for_function("() => document.getElementById('cursor-info').textContent.includes('liver')")
                    page.screenshot(path=str(screenshots / "viewer.png"))
                    page.locator("#view-axial").screenshot(path=str(screenshots / "viewer_axial.png"))
                    page.locator("#view-coronal").screenshot(path=str(screenshots / "viewer_coronal.png"))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    report["seconds"] = round(time.time() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--screenshots", type=Path, default=None, help="write viewer.png, viewer_axial.png, viewer_coronal.png here")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tfmedseg-viewer-check-"))
    try:
        report = run(work, args.screenshots, args.chromium)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    import json

    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
