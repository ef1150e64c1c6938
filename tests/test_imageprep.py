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


def _before(img, input_size, mean, std, crop_pct, interpolation):
    """The preparation as every earlier release did it (resize the whole image, then centre-crop), kept here
    so that a change to edgezoo.imageprep cannot silently move the pixels calibrations and servers saw."""
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    c, h, w = input_size
    scale = max(h / img.height, w / img.width) / crop_pct
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), resample)
    left, top = (rw - w) // 2, (rh - h) // 2
    x = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32).reshape(h, w, c) / 255.0
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def test_real_photos_prepare_bit_identically_to_earlier_releases():
    skimage_data = __import__("pytest").importorskip("skimage.data", reason="scikit-image ships the photos")
    from edgezoo.imageprep import prepare

    photos = {name: Image.fromarray(getattr(skimage_data, name)()) for name in ("astronaut", "coffee", "chelsea",
                                                                                "rocket", "camera")}
    # plus a 6:1 panorama cut from one: still the whole-image path
    photos["panorama"] = photos["coffee"].crop((0, 0, 600, 100))
    for name, img in photos.items():
        for size, crop, interp in (((3, 224, 224), 0.875, "bilinear"), ((3, 240, 320), 1.0, "bicubic"),
                                   ((3, 32, 32), 0.875, "nearest"), ((1, 96, 96), 0.9, "bilinear")):
            got = prepare(img, size, MEAN[:size[0]], STD[:size[0]], crop, interp)
            want = _before(img.convert("L" if size[0] == 1 else "RGB"), size, MEAN[:size[0]], STD[:size[0]], crop,
                           interp)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {size} {interp}")


_BOUNDED = r"""
import io, resource, sys
import numpy as np
from PIL import Image
from edgezoo.export.calibration import load_image_folder
from edgezoo.serve.model import Preprocessing
from edgezoo.serve.preprocess import decode_image

folder, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# The long axis is dark except around its middle, where the centre crop lands.
line = np.full(max(w, h), 10, np.uint8)
line[len(line) // 2 - 500: len(line) // 2 + 500] = 200
grey = np.repeat(line[:, None], w, axis=1) if h >= w else np.repeat(line[None, :], h, axis=0)
arr = np.repeat(grey[..., None], 3, axis=2)
buf = io.BytesIO()
Image.fromarray(arr).save(buf, format="PNG")
open(folder + "/thin.png", "wb").write(buf.getvalue())
# 1 GB of address space beyond what the interpreter holds now: the 19.7 GB intermediate cannot happen
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
size, mean, std = (3, 224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
served = decode_image(buf.getvalue(), Preprocessing(size, mean, std), max_pixels=10**6)
calib = load_image_folder(folder, size, mean, std)[0]
np.testing.assert_array_equal(served, calib)
assert served.shape == size and np.allclose(served, (200 / 255 - 0.5) / 0.5), (served.min(), served.max())
print("ok", len(buf.getvalue()))
"""


def test_a_thin_image_costs_memory_of_the_crop_not_of_its_scaled_length(tmp_path):
    """A 1 x 100000 PNG of a few hundred bytes passes the decoded-pixel budget; scaled whole so its short side
    fills the crop it would be 256 x 25,600,000 pixels. Serving and calibration both produce the crop within
    1 GB of address space, and the crop shows the image's middle."""
    import subprocess
    import sys

    for w, h in ((1, 100_000), (100_000, 1), (3, 90_000)):
        r = subprocess.run([sys.executable, "-c", _BOUNDED, str(tmp_path), str(w), str(h)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("ok"), (w, h, r.stderr[-2000:])
        (tmp_path / "thin.png").unlink()
