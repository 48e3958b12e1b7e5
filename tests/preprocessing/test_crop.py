"""Every crop's inverse, the seed crop rules, and bad crop boxes."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume, canonical_affine
from tfmedseg.preprocessing import crop as C


def test_crop_apply_invert_with_padding_and_resize():
    img = np.arange(8 * 8, dtype=np.float32).reshape(8, 8)
    c = C.Crop.from_box(((-2, 6), (4, 12)), img.shape, allow_padding=True)
    out = c.apply(img, pad_value=-1)
    assert out.shape == (8, 8)
    assert (out[:2] == -1).all() and (out[:, 4:] == -1).all()
    np.testing.assert_array_equal(out[2:, :4], img[:6, 4:])
    back = c.invert(out, fill=-5)
    np.testing.assert_array_equal(back[:6, 4:], img[:6, 4:])
    assert (back[6:] == -5).all() and (back[:, :4] == -5).all()
    # resize by an integer factor: a block mask round-trips exactly with nearest
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 6:10] = 1
    c2 = C.Crop.from_box(((4, 12), (4, 12)), mask.shape, out_shape=(16, 16))
    np.testing.assert_array_equal(c2.invert(c2.apply(mask, "nearest")), mask)


def test_crop_box_outside_image_raises():
    with pytest.raises(InvalidInputError, match="outside the image") as err:
        C.Crop.from_box(((0, 4), (6, 10)), (8, 8))
    assert err.value.path == "box"
    with pytest.raises(InvalidInputError, match="outside"):
        C.Crop.from_box(((9, 12), (0, 4)), (8, 8), allow_padding=True)
    with pytest.raises(InvalidInputError, match="empty"):
        C.Crop.from_box(((3, 3), (0, 4)), (8, 8))
    with pytest.raises(InvalidInputError, match="box"):
        C.chest_crop(np.zeros((20, 20)), (25, 0, 30, 10))


def test_liver_voi_square_fill_clahe_and_inverse():
    ct = np.full((6, 32, 32), 0.3, np.float32)
    liver = np.zeros((6, 32, 32), bool)
    liver[1:4, 10:18, 8:24] = True  # 8 x 16 in-plane: squared to 16 x 16
    ct[liver] = np.linspace(0.4, 0.8, liver.sum())
    voi, crop = C.liver_voi(ct, liver, out_size=16, clahe=False)
    assert crop.box == ((1, 4), (6, 22), (8, 24))
    assert voi.shape == (3, 16, 16)
    # background (outside the liver) = mean of the liver pixels of the slice
    k_mean = ct[2][liver[2]].mean()
    np.testing.assert_allclose(voi[1, 0, 0], k_mean, rtol=1e-5)
    lesion = np.zeros_like(liver, np.uint8)
    lesion[2, 12:14, 10:14] = 1
    back = crop.invert(crop.apply(lesion, "nearest"))
    np.testing.assert_array_equal(back, lesion)
    voi_c, _ = C.liver_voi(ct, liver, out_size=16)
    assert voi_c.min() >= 0.0 and voi_c.max() <= 1.0 and not np.allclose(voi_c, voi)
    with pytest.raises(InvalidInputError, match="liver_mask"):
        C.liver_voi(ct, np.zeros_like(liver))


def test_body_crop_largest_component_square_and_inverse():
    ct = np.full((40, 40), -1000.0, np.float32)
    ct[10:30, 5:35] = 40.0  # body 20 x 30
    ct[36:38, 0:40] = 200.0  # couch: separate, smaller component
    out, crop = C.body_crop(ct, out_size=60)  # upsampling x2: nearest round trip is exact
    assert crop.box == ((5, 35), (5, 35))
    assert out.shape == (60, 60) and out[0, 0] == -1000.0 and out[20, 30] == 40.0
    mask = (ct > 0) & (np.arange(40)[:, None] < 30)
    np.testing.assert_array_equal(crop.invert(crop.apply(mask.astype(np.uint8), "nearest")), mask)
    with pytest.raises(InvalidInputError, match="no voxel"):
        C.body_crop(np.full((8, 8), -1000.0))


def test_chest_crop_boxes_and_masks_round_trip():
    img = np.zeros((64, 48), np.float32)
    img[16:48, 8:40] = 1.0
    out, crop = C.chest_crop(img, (16, 8, 48, 40), out_size=(64, 64))
    assert out.shape == (64, 64) and out.min() == 1.0
    boxes = np.array([[20, 12, 28, 20]], np.float32)
    inside = crop.boxes_to_crop(boxes)
    np.testing.assert_allclose(inside, [[8, 8, 24, 24]])
    np.testing.assert_allclose(crop.boxes_to_source(inside), boxes)
    lesion = np.zeros((64, 48), np.uint8)
    lesion[20:28, 12:20] = 1
    np.testing.assert_array_equal(crop.invert(crop.apply(lesion, "nearest")), lesion)


def test_hecktor_cube_centre_and_inverse():
    spacing = (2.0, 1.0, 1.0)
    affine = canonical_affine(spacing, (0.0, 0.0, 0.0))
    vol = Volume(np.zeros((20, 40, 40), np.float32), spacing, affine, "CT")
    centre_idx = np.array([10.0, 20.0, 20.0])
    centre = (affine @ np.r_[centre_idx, 1])[:3]
    cube = C.hecktor_cube(vol, (centre - 4, centre + 4), size=8, spacing=1.0)
    assert cube.shape == (8, 8, 8)
    arr = vol.array.copy()
    arr[10, 20, 20] = 100.0
    out = cube.apply(vol.with_array(arr), cval=-1024)
    # the cube centre (3.5, 3.5, 3.5) sits on the source voxel (10, 20, 20)
    idx = np.linalg.inv(cube.affine) @ np.r_[centre, 1]
    np.testing.assert_allclose(idx[:3], [3.5, 3.5, 3.5])
    assert out.array.max() > 0 and out.spacing == (1.0, 1.0, 1.0)
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    back = cube.invert(label)
    assert back.shape == vol.shape and back[10, 20, 20] == 1 and back[0, 0, 0] == 0
    # 4 mm in z = 2 source slices; 4 mm in-plane = 4 voxels
    assert back[:, 20, 20].sum() == 2 and back[10, 20].sum() == 4
    with pytest.raises(InvalidInputError, match="box_ras"):
        C.hecktor_cube(vol, (centre + 500, centre + 510), size=8)
