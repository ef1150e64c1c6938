"""int8 calibration and the server prepare an image identically (EXIF orientation, non-square crop)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from edgezoo.export.calibration import load_image_folder
from edgezoo.serve.model import Preprocessing
from edgezoo.serve.preprocess import decode_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8))  # landscape, 90 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display (a phone held upright)
    img.info["exif"] = exif.tobytes()
    return img


def test_calibration_and_serve_prepare_the_same_pixels(tmp_path):
    img = _photo()
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=img.info["exif"])
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "a.png").write_bytes(buf.getvalue())
    size = (3, 32, 24)  # non-square, portrait like the displayed photo
    calib = load_image_folder(tmp_path / "calib", size, MEAN, STD)[0]
    served = decode_image(buf.getvalue(), Preprocessing(size, MEAN, STD), max_pixels=10**6)
    assert calib.shape == served.shape == size
    np.testing.assert_array_equal(calib, served)
    # and the EXIF rotation was applied: the un-rotated image prepared the same way differs
    plain = io.BytesIO()
    img.save(plain, format="PNG")
    assert not np.array_equal(decode_image(plain.getvalue(), Preprocessing(size, MEAN, STD), 10**6), served)
