"""Which images the agreement figures are measured on when no labelled folder is given: ones calibration
never saw, named.

From a ``--calib`` folder the export samples ``calib_count + eval_count`` images (a fixed seed, name order):
the first ``calib_count`` calibrate, the rest are held out. A folder with no more than ``calib_count`` images
still gives up a quarter of them (at most ``eval_count``, at least one) to the agreement figures, because
agreement measured on the images the ranges were fitted to says little about other images. Without a
folder, both sets are synthetic, from different seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

NAMED = 5  # held-out files named in the text; report.json lists all


@dataclass
class CalibrationSplit:
    images: np.ndarray  # the calibration images, then the held-out ones
    n_calib: int
    folder: Path
    calib_files: list[Path] = field(default_factory=list)
    held_files: list[Path] = field(default_factory=list)
    note: str | None = None  # said in the report when the folder was too small to hold out eval_count

    @property
    def calib_source(self) -> str:
        held = f"; {len(self.held_files)} more held out for the agreement figures" if self.held_files else ""
        return f"{self.n_calib} images from {self.folder}{held}"

    def held_description(self) -> str:
        if not self.held_files:
            return f"the {self.n_calib} calibration images ({self.folder} has only one image: nothing to hold out)"
        names = ", ".join(p.name for p in self.held_files[:NAMED])
        more = f" and {len(self.held_files) - NAMED} more" if len(self.held_files) > NAMED else ""
        return (f"{len(self.held_files)} images of {self.folder} held out from calibration ({names}{more}; "
                "report.json agreement_images lists them)")

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "calibration": len(self.calib_files),
                "held_out": [str(p.relative_to(self.folder)) for p in self.held_files]}


def split_folder(folder: str | os.PathLike, calib_count: int, eval_count: int, seed: int,
                 input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], crop_pct: float,
                 interpolation: str) -> CalibrationSplit:
    """Sample, decode (edgezoo.export.calibration.load_images) and split a calibration folder."""
    from edgezoo.export.calibration import load_images, sample_files

    folder = Path(folder)
    files = sample_files(folder, calib_count + eval_count, seed)
    n = len(files)
    note = None
    if n > calib_count:
        n_calib = calib_count
    elif n >= 2:
        n_calib = n - max(1, min(eval_count, n // 4))
        note = (f"{folder} has {n} images, not more than --calib-count {calib_count}: {n - n_calib} of them are "
                f"held out for the agreement figures and {n_calib} calibrate")
    else:
        n_calib = n
    images = load_images(files, input_size, mean, std, crop_pct, interpolation)
    return CalibrationSplit(images, n_calib, folder, files[:n_calib], files[n_calib:], note)
