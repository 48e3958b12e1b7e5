"""Synthetic bright rectangles on a dark background, with boxes, classes and masks."""

import numpy as np


def rectangles(n_images, size, n_objects, num_classes, seed=0, min_side=10, max_side=22):
    rng = np.random.default_rng(seed)
    images = np.zeros((n_images, size, size, 1), np.float32)
    boxes, classes, masks = [], [], []
    for i in range(n_images):
        b, c, m = [], [], []
        for k in range(n_objects):
            h, w = rng.integers(min_side, max_side + 1, 2)
            y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            cls = 1 + (k % num_classes)
            images[i, y0 : y0 + h, x0 : x0 + w, 0] = 0.5 * cls
            mk = np.zeros((size, size), bool)
            mk[y0 : y0 + h, x0 : x0 + w] = True
            b.append([y0, x0, y0 + h, x0 + w])
            c.append(cls)
            m.append(mk)
        boxes.append(np.array(b, np.float32))
        classes.append(np.array(c, np.int32))
        masks.append(np.array(m))
    return images, boxes, classes, masks
