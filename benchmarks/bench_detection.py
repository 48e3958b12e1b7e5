"""Detection speed: tfmedseg SSD512-VGG16 and Mask R-CNN R50-FPN vs torchvision, interleaved in one run.

Ours runs in this process (TensorFlow, oneDNN on); torchvision runs in a persistent worker process
in a torch environment without TensorFlow (``--torch-python``, default: the environment variable
``TFMEDSEG_TORCH_PYTHON``; without either the script stops with exit status 2),
driven over a pipe: for every round the parent times one call of ours, then asks the worker for
one call of the same kind and reads back the worker's own wall and CPU seconds, so both see the
same machine load. Both use 2 threads; torch with ``OMP_WAIT_POLICY=PASSIVE`` (see
``docs/performance.md``).

Contenders (untrained weights, random images with 3 boxes of 5 classes):

- ``ssd infer``: 1 image 512^2 x 3, network + decode + NMS (ours ``SSD.__call__``; torchvision
  ``ssd300_vgg16(num_classes=6)`` with its transform set to 512 and the same NMS IoU / score /
  top-k); ``ssd train``: one step on a batch of 2 (ours ``train_step`` via ``train_on_batch``;
  torch ``loss.backward(); opt.step()``).
- ``maskrcnn infer``: 1 image 320^2 x 3 (ours ``MaskRCNN.__call__``, 1000 inference proposals;
  torchvision ``maskrcnn_resnet50_fpn(num_classes=6, min_size=max_size=320)``, the same proposal
  counts, detection thresholds and ROI sampling counts); ``maskrcnn train``: batch of 2.

Run: ``.venv/bin/python benchmarks/bench_detection.py [--rounds 5] [--models ssd,maskrcnn]``
(``--worker`` is the torch side; it imports no TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import time

from torch_worker import (TorchWorker, add_torch_worker_options, require_torch_python, serve_timed_calls,
                          tensorflow_with_threads)

THREADS = 2
NUM_CLASSES = 5
SSD_SIZE = 512
MRCNN_SIZE = 320
BATCH_TRAIN = 2
#: Mask R-CNN config fields that make ours the same network as torchvision's ``maskrcnn_resnet50_fpn``
#: (``--seed-widths`` keeps the seed's: RPN conv 512, 14x14 masks without the deconv).
MRCNN_AS_TORCHVISION = {"rpn_filters": 256, "mask_upsample": True}


def _boxes(rng, size: int, n: int = 3):
    import numpy as np

    lo = rng.uniform(0, size * 0.6, (n, 2))
    hi = lo + rng.uniform(size * 0.1, size * 0.35, (n, 2))
    return np.concatenate([lo, np.minimum(hi, size - 1)], 1).astype("float32")  # (y0, x0, y1, x1)


# ----------------------------------------------------------------------------- torch worker
def worker() -> None:
    """torch side: build on demand, run one call per request line, reply with timings."""
    import numpy as np
    import torch
    import torchvision
    from torchvision.models.detection import maskrcnn_resnet50_fpn, ssd300_vgg16

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def targets(size, batch):
        out = []
        for _ in range(batch):
            b = _boxes(rng, size)[:, [1, 0, 3, 2]]  # torchvision: (x0, y0, x1, y1)
            t = {"boxes": torch.from_numpy(b), "labels": torch.tensor([1, 3, 5])}
            masks = np.zeros((3, size, size), np.uint8)
            for k, (x0, y0, x1, y1) in enumerate(b.astype(int)):
                masks[k, y0:y1, x0:x1] = 1
            t["masks"] = torch.from_numpy(masks)
            out.append(t)
        return out

    def build(kind):
        if kind.startswith("ssd"):
            net = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                               nms_thresh=0.45, score_thresh=0.01, detections_per_img=200, topk_candidates=400)
            net.transform.min_size, net.transform.max_size = (SSD_SIZE,), SSD_SIZE
            net.transform.fixed_size = (SSD_SIZE, SSD_SIZE)
            size = SSD_SIZE
        else:
            net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                        min_size=MRCNN_SIZE, max_size=MRCNN_SIZE,
                                        rpn_pre_nms_top_n_train=6000, rpn_pre_nms_top_n_test=6000,
                                        rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
                                        rpn_nms_thresh=0.7, rpn_batch_size_per_image=256,
                                        box_batch_size_per_image=200, box_positive_fraction=0.33,
                                        box_score_thresh=0.7, box_nms_thresh=0.3, box_detections_per_img=100)
            size = MRCNN_SIZE
        if kind.endswith("infer"):
            net.eval()
            x = [torch.rand(3, size, size)]

            def run():
                with torch.inference_mode():
                    net(x)
        else:
            net.train()
            opt = torch.optim.Adam(net.parameters(), 1e-4)
            x = [torch.rand(3, size, size) for _ in range(BATCH_TRAIN)]
            y = targets(size, BATCH_TRAIN)

            def run():
                opt.zero_grad(set_to_none=True)
                loss = sum(net(x, y).values())
                loss.backward()
                opt.step()
        return run

    serve_timed_calls(build, {"torch": torch.__version__, "torchvision": torchvision.__version__})


# ----------------------------------------------------------------------------- ours
def _ours(kind: str):
    import numpy as np
    import tensorflow as tf  # tfmedseg was imported first in main()

    from tfmedseg.models.detection.mask_rcnn import (
        build_mask_rcnn,
        prepare_ground_truth,
    )
    from tfmedseg.models.detection.ssd import build_ssd

    rng = np.random.default_rng(0)
    if kind.startswith("ssd"):
        # pre_nms_top_k = torchvision's topk_candidates (ours defaults to ssd_keras: every anchor)
        model = build_ssd(image_size=SSD_SIZE, input_channels=3, num_classes=NUM_CLASSES, pre_nms_top_k=400)
        size = SSD_SIZE
    else:
        # torchvision's widths where ours has a choice: RPN conv 256 (ours defaults to Matterport's 512)
        # and the x2 deconv mask head with 28x28 masks (the seed's head is 14x14, mask_upsample=False)
        model = build_mask_rcnn(image_size=MRCNN_SIZE, input_channels=3, num_classes=NUM_CLASSES, **MRCNN_AS_TORCHVISION)
        size = MRCNN_SIZE
    if kind.endswith("infer"):
        x = tf.constant(rng.random((1, size, size, 3), np.float32))
        traces = [0]

        def forward(a):
            traces[0] += 1  # Python side effect: runs once per trace
            return model(a, training=False)

        fn = tf.function(forward)

        def call():
            return tf.nest.map_structure(lambda t: t.numpy(), fn(x))

        call.traces = traces
        return call
    x = rng.random((BATCH_TRAIN, size, size, 3)).astype("float32")
    boxes = [_boxes(rng, size) for _ in range(BATCH_TRAIN)]
    classes = [np.array([1, 3, 5], np.int32) for _ in range(BATCH_TRAIN)]
    if kind.startswith("ssd"):
        targets = {"boxes": tf.constant(np.stack(boxes)), "classes": tf.constant(np.stack(classes))}
    else:
        masks = []
        for b in boxes:
            m = np.zeros((3, size, size), np.uint8)
            for k, (y0, x0, y1, x1) in enumerate(b.astype(int)):
                m[k, y0:y1, x0:x1] = 1
            masks.append(m)
        gt = prepare_ground_truth(boxes, classes, masks, model.config)
        targets = {k: tf.constant(v) for k, v in gt.items()}
    traces = [0]
    train_step = model.train_step

    def counted_train_step(data):
        traces[0] += 1  # Python side effect: runs once per trace of Keras' train function
        return train_step(data)

    model.train_step = counted_train_step
    model.compile(optimizer="adam")
    images = tf.constant(x)

    def call():
        return model.train_on_batch(images, targets)

    call.traces = traces
    return call


def trace_count(call) -> int:
    """How many times the ``tf.function`` behind one of :func:`_ours`' calls has traced."""
    return call.traces[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="ssd,maskrcnn")
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--seed-widths", action="store_true",
                        help="Mask R-CNN with the seed's RPN width (512) and 14x14 mask head instead of torchvision's")
    add_torch_worker_options(parser)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    torch_python = require_torch_python(args.torch_python, parser.prog)

    import numpy as np

    if args.seed_widths:
        MRCNN_AS_TORCHVISION.clear()
    tensorflow_with_threads(THREADS)

    torch_worker = TorchWorker(torch_python, __file__, THREADS)
    hello = torch_worker.hello
    print(f"uptime: {os.popen('uptime').read().strip()}; torch {hello['torch']}, torchvision {hello['torchvision']}")
    ask = torch_worker.ask

    kinds = [f"{m} {mode}" for m in args.models.split(",") for mode in args.modes.split(",")]
    print(f"{'contender':16s} {'ours med':>9s} {'ours min':>9s} {'ours cpu':>9s} {'tv med':>8s} {'tv min':>8s} "
          f"{'tv cpu':>8s} {'ratio med':>9s} {'min':>6s} {'cpu':>6s}  load  (seconds per call)", flush=True)
    for kind in kinds:
        t0 = time.perf_counter()
        ours = _ours(kind.replace(" ", "_"))
        ours()  # trace / warm-up
        warm_traces = trace_count(ours)
        ask(kind)  # torch builds and warms up
        load0 = os.getloadavg()[0]
        w_o, c_o, w_t, c_t = [], [], [], []
        for _ in range(args.rounds):
            w0, c0 = time.perf_counter(), time.process_time()
            ours()
            w_o.append(time.perf_counter() - w0)
            c_o.append(time.process_time() - c0)
            r = ask(kind)
            w_t.append(r["wall"])
            c_t.append(r["cpu"])
        retraced = trace_count(ours) - warm_traces
        if retraced:
            print(f"WARNING: ours retraced {retraced} times during the timed calls")
        def med(v):
            return float(np.median(v))

        om, on, oc, tm, tn, tc = med(w_o), min(w_o), med(c_o), med(w_t), min(w_t), med(c_t)
        print(f"{kind:16s} {om:9.3f} {on:9.3f} {oc:9.3f} {tm:8.3f} {tn:8.3f} {tc:8.3f} {om / tm:8.2f}x {on / tn:5.2f}x "
              f"{oc / tc:5.2f}x  {load0:.1f}->{os.getloadavg()[0]:.1f}  (total {time.perf_counter() - t0:.0f} s, traces {warm_traces}+{retraced})",
              flush=True)
    torch_worker.close()
    print("ratio = ours / torchvision time (goal <= 1.0x); seconds per call (infer: 1 image; train: batch of "
          f"{BATCH_TRAIN}).\nuptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
