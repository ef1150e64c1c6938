"""PyTorch eager, for a registry name (or any nn.Module), so the zoo's models can be compared with their exports.

It builds registry models (edgezoo.models) but never exports them: that is edgezoo.export.loaders.

Imported only when asked for: the device side never loads this module.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgezoo.errors import InputError, require_torch
from edgezoo.runtimes.base import Runner, TensorInfo, first_line
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor


def build_registry_model(name: str, weights: str | None = None, seed: int = 0):
    """A registry model in eval mode. Without weights, BatchNorm statistics are recalibrated on random data,
    so activations keep a realistic scale through the depth (random-init nets otherwise drift towards tiny or
    denormal values, which changes the timing of some kernels). Eight random images are enough for that
    scale; the default 64 took 10-25 s per model on this shared 2-core machine."""
    require_torch()
    import torch

    from edgezoo.models.registry import create_model, get_spec
    from edgezoo.models.batchnorm import random_images, recalibrate_bn

    spec = get_spec(name)
    torch.manual_seed(seed)
    model = create_model(spec.name, weights=weights)
    if weights is None:
        recalibrate_bn(model, random_images(spec.input_size, 8, seed), batch_size=4)
    return spec, model.eval()


def registry_metadata(spec, input_size: Sequence[int] | None = None):
    from edgezoo.onnx_meta import ModelMetadata

    size = tuple(input_size) if input_size is not None else tuple(spec.input_size)
    if len(size) == 2:
        size = (spec.input_size[0], *size)
    return ModelMetadata(model=spec.name, input_size=size, mean=tuple(spec.mean), std=tuple(spec.std),
                         num_classes=spec.num_classes)


class TorchRunner(Runner):
    """A PyTorch module run eagerly under ``torch.inference_mode``; ``threads`` sets torch's intra-op threads
    while the runner is active (torch's setting is process-wide, so it is restored on deactivate)."""

    name = "torch"

    def __init__(self, model: Any, threads: int | None = None, weights: str | None = None,
                 input_size: Sequence[int] | None = None, seed: int = 0) -> None:
        super().__init__()
        require_torch()
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.spec = None
        if isinstance(model, str):
            from edgezoo.models.registry import get_spec

            self.spec = get_spec(model)  # unknown names fail here, before any work
            self._source: Any = (model, weights, seed)
            self.module = None
        else:
            self._source = None
            self.module = model.eval()
        self._input_size = tuple(input_size) if input_size is not None else None
        self._saved_threads: int | None = None

    def _activate(self) -> None:
        import torch

        if self.module is None:
            name, weights, seed = self._source
            self.spec, self.module = build_registry_model(name, weights, seed)
        if self.threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def _deactivate(self) -> None:
        import torch

        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def _channels(self) -> int | str:
        if self.spec is not None:
            return self.spec.input_size[0]
        if self._input_size is not None and len(self._input_size) == 3:
            return self._input_size[0]
        return "channels"

    def _inputs(self) -> list[TensorInfo]:
        # Convolutional nets take any size above their minimum, so H and W are reported as dynamic
        return [TensorInfo("input", ("batch", self._channels(), "height", "width"), np.dtype(np.float32), "NCHW")]

    def _outputs(self) -> list[TensorInfo]:
        classes = self.spec.num_classes if self.spec is not None else "classes"
        return [TensorInfo("logits", ("batch", classes), np.dtype(np.float32))]

    def model_metadata(self):
        if self.spec is not None:
            return registry_metadata(self.spec, self._input_size)
        if self._input_size is not None and len(self._input_size) == 3:
            from edgezoo.onnx_meta import ModelMetadata

            return ModelMetadata(input_size=self._input_size)
        return None

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if len(feeds) != 1:
            raise InputError(f"the torch runner takes one input, got {sorted(feeds)}")
        x = torch.from_numpy(next(iter(feeds.values())))
        try:
            with torch.inference_mode():
                y = self.module(x)
        except RuntimeError as e:
            raise InputError(f"{self.describe()} cannot run on input {tuple(x.shape)}: {first_line(e)}",
                             "choose a larger input size") from None
        if isinstance(y, (tuple, list)):
            return [t.numpy() for t in y]
        return [y.numpy()]

    def model_size_bytes(self) -> int | None:
        if self.module is None:
            return None
        return sum(t.numel() * t.element_size() for t in list(self.module.parameters()) + list(self.module.buffers()))

    def describe(self) -> str:
        import torch

        what = self.spec.name if self.spec is not None else type(self.module).__name__
        thr = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        return f"torch {torch.__version__.split('+')[0]} eager ({what}{thr})"



REGISTRY = FileKind("registry", (), "a registry model name", "registry model names")


def open_file(model, threads=None, weights=None, input_size=None) -> TorchRunner:
    import os

    return TorchRunner(os.fspath(model), threads=threads, weights=weights, input_size=input_size)


DESCRIPTOR = RuntimeDescriptor("torch", ("pytorch", "eager"), (REGISTRY,), open_file, extra="torch",
                               options=("threads", "weights", "input_size"))

__all__ = ["TorchRunner", "build_registry_model", "registry_metadata"]
