"""Where a detection step's time goes: a ``tf.profiler`` trace of ours, grouped by model piece.

Builds the same contenders as ``bench_detection.py`` (SSD512-VGG16, Mask R-CNN R50-FPN at 320^2,
5 classes; train = one ``train_on_batch`` on a batch of 2, infer = one image), warms each up, checks
that the warm calls do not retrace (prints the trace count), then traces ``--steps`` calls with
``tf.profiler`` and sums the ops' self-times (``framework_op_stats``) per piece of the model, forward
and backward (``gradient_tape/...``) apart. Self-times add up over the 2 threads, so the total is
close to the step's CPU time; the wall time of each traced call is printed beside it.

Run: ``PYTHONPATH=. python benchmarks/profile_detection.py --models maskrcnn --modes train``
(``--logdir`` keeps the trace for TensorBoard's profile plugin; ``--top N`` lists the N costliest ops).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (piece, substrings of the lower-cased op name; first match wins)
PIECES = (
    ("optimizer (Adam)", ("adam", "assignaddvariableop", "assignvariableop", "resourceapply")),
    ("RPN anchor targets (IoU, sampling)", ("rpn_targets",)),
    ("proposals: decode + top-k + NMS", ("proposals",)),
    ("ROI sampling + box/mask targets", ("detection_targets",)),
    ("ROIAlign 7x7 (box head input)", ("roi_align_classifier",)),
    ("ROIAlign 14x14 (mask head input)", ("roi_align_mask",)),
    ("SSD heads", ("cls_head", "ssd_network/box_head", "ssd_network_1/box_head", "_reshape_", "class_logits", "box_deltas")),
    ("box head", ("box_head",)),
    ("mask head", ("mask_head",)),
    ("RPN head", ("/rpn/", "rpn_conv", "rpn_class", "rpn_bbox")),
    ("detection layer (decode + per-class NMS)", ("detect", "combinednonmaxsuppression")),
    ("mask paste (full-size masks)", ("paste",)),
    ("SSD anchor targets", ("anchor_targets",)),
    ("FPN", ("fpn",)),
    ("backbone", ("resnet", "conv", "block", "stage", "vgg", "pool", "fc6", "fc7", "norm", "bn")),
)


def piece_of(name: str) -> str:
    low = name.lower()
    for piece, keys in PIECES:
        if any(k in low for k in keys):
            return piece
    return "other (losses, glue)"


def op_stats(logdir: str) -> list[dict]:
    """Rows ``{"type", "name", "n", "self_us"}`` of the newest trace under ``logdir``."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    data, ok = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"could not read the trace {path}")
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    rows = []
    for r in table["rows"]:
        v = dict(zip(cols, [c.get("v") if c else None for c in r["c"]]))
        rows.append({"type": v["type"], "name": v["operation"], "n": v["occurrences"], "self_us": v["total_self_time"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="maskrcnn,ssd")
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--logdir", default=None)
    args = parser.parse_args()

    import tfmedseg  # noqa: F401  (oneDNN before TensorFlow)
    import tensorflow as tf

    import bench_detection

    print(f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads()}, inter-op {tf.config.threading.get_inter_op_parallelism_threads()}; "
          f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    for kind in [f"{m}_{mode}" for m in args.models.split(",") for mode in args.modes.split(",")]:
        call = bench_detection._ours(kind)
        call()
        call()
        print(f"\n== {kind}: traces in the 2 warm-up calls: {bench_detection.trace_count(call)}", flush=True)
        logdir = args.logdir or tempfile.mkdtemp(prefix="profile_detection_")
        logdir = os.path.join(logdir, kind)
        walls = []
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            w0 = time.perf_counter()
            call()
            walls.append(time.perf_counter() - w0)
        tf.profiler.experimental.stop()
        print(f"traces after the profiled calls: {bench_detection.trace_count(call)}; wall per call "
              + ", ".join(f"{w:.2f}" for w in walls) + " s", flush=True)
        rows = [r for r in op_stats(logdir) if r["type"] != "IDLE"]
        total = sum(r["self_us"] for r in rows)
        per = collections.defaultdict(lambda: [0.0, 0.0])
        for r in rows:
            per[piece_of(r["name"])]["gradient_tape" in r["name"].lower()] += r["self_us"]
        print(f"{'piece':44s} {'fwd ms':>9s} {'bwd ms':>9s} {'total ms':>9s} {'%':>6s}   (op self-time per call)")
        for piece, (fwd, bwd) in sorted(per.items(), key=lambda kv: -sum(kv[1])):
            s = args.steps * 1e3
            print(f"{piece:44s} {fwd / s:9.1f} {bwd / s:9.1f} {(fwd + bwd) / s:9.1f} {100 * (fwd + bwd) / total:5.1f}%")
        print(f"{'all ops':44s} {'':9s} {'':9s} {total / args.steps / 1e3:9.1f}")
        if args.top:
            print(f"top {args.top} ops:")
            for r in sorted(rows, key=lambda r: -r["self_us"])[: args.top]:
                print(f"  {r['self_us'] / args.steps / 1e3:9.1f} ms  x{int(r['n']):<5d} {r['type']:28s} {r['name'][:150]}")
            other = [r for r in rows if piece_of(r["name"]) == "other (losses, glue)"]
            print("top 'other' ops:")
            for r in sorted(other, key=lambda r: -r["self_us"])[:12]:
                print(f"  {r['self_us'] / args.steps / 1e3:9.1f} ms  x{int(r['n']):<5d} {r['type']:28s} {r['name'][:150]}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
