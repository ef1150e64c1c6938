"""ExecuTorch: .pte programs through the ExecuTorch runtime's Python bindings (``executorch.runtime``), with
the XNNPACK delegate when the program was lowered to it.

Threads: the bindings hold one process-wide threadpool, and XNNPACK's delegate takes a pointer to it when a
method is loaded. ``_unsafe_reset_threadpool`` replaces the pool, so a method loaded before a resize runs on
a freed pool (seen here as crashes inside execute). The runner therefore resizes the pool before it loads
its program, refuses to resize it while another ExecuTorch runner is active at another count (one thread
count per process), and reads the size back with ``_threadpool_get_thread_count``. Those functions are
experimental in executorch 1.x; without them the runner says so rather than run on a thread count nobody
asked for. The bindings take torch tensors, so this runner needs torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, check_model_file, check_threads, first_line, guess_layout
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor
from edgezoo.runtimes.filecheck import check_pte

SUFFIXES = (".pte",)
# c10::ScalarType codes, as MethodMeta's TensorInfo.dtype() reports them
SCALAR_TYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
                7: np.float64, 11: np.bool_}


def import_executorch():
    try:
        import executorch.extension.pybindings.portable_lib as portable_lib
        from executorch.runtime import Runtime
    except ImportError:
        raise MissingDependencyError("ExecuTorch", "pip install 'edgezoo[executorch]'",
                                     "the executorch runtime needs it") from None
    return Runtime, portable_lib


class ExecuTorchRunner(Runner):
    """One method (``forward`` by default) of a .pte program."""

    name = "executorch"
    _active_counts: list[int] = []  # pool size each active runner loaded its method with (process-wide)

    def __init__(self, path: str | os.PathLike, threads: int | None = None, method: str = "forward") -> None:
        super().__init__()
        check_threads(threads)
        self.path = Path(path)
        if self.path.suffix.lower() not in SUFFIXES:
            raise InputError(f"executorch runs .pte files; {self.path} is not one")
        check_model_file(self.path, "an ExecuTorch .pte file")
        self.threads, self.method_name = threads, method
        self._runtime_cls, self._lib = import_executorch()
        if threads is not None and not hasattr(self._lib, "_unsafe_reset_threadpool"):
            raise MissingDependencyError("an ExecuTorch build with a resizable threadpool",
                                         "pip install -U 'edgezoo[executorch]'",
                                         "this one cannot set the thread count")
        self.program = self.method = None
        self._meta = None
        self._in_infos: list[TensorInfo] = []
        self._loaded_with: int | None = None

    def _activate(self) -> None:
        self._set_pool()
        try:
            self.program = self._runtime_cls.get().load_program(self.path)
        except Exception as e:
            raise InputError(f"executorch cannot load {self.path}: {first_line(e)}",
                             "is it a complete .pte file from a matching ExecuTorch version?") from None
        if self.method_name not in self.program.method_names:
            names = ", ".join(sorted(self.program.method_names))
            self.program = None
            raise InputError(f"{self.path} has no method '{self.method_name}'", f"it has {names}")
        try:
            self.method = self.program.load_method(self.method_name)
        except Exception as e:  # e.g. a delegate this build lacks
            self.program = None
            raise InputError(f"executorch cannot load method '{self.method_name}' of {self.path}: "
                             f"{first_line(e)}", "was it lowered for a backend this build has (XNNPACK)?") from None
        self._meta = self.method.metadata
        self._in_infos = self._inputs()  # read from the program once, not on every call
        self._loaded_with = self.thread_count
        ExecuTorchRunner._active_counts.append(self._loaded_with)

    def _set_pool(self) -> None:
        """Resize the pool to ``threads`` before loading; never under another active runner's methods."""
        now = self.thread_count
        if self.threads is None or now == self.threads:
            return
        if ExecuTorchRunner._active_counts:
            raise InputError(f"ExecuTorch has one threadpool per process, and a program is already loaded on "
                             f"{now} thread(s); this one asks for {self.threads}",
                             "use one thread count for every .pte in a process (deactivate the other first)")
        self._lib._unsafe_reset_threadpool(int(self.threads))

    def _deactivate(self) -> None:
        self.program = self.method = self._meta = None
        self._in_infos = []
        if self._loaded_with in ExecuTorchRunner._active_counts:
            ExecuTorchRunner._active_counts.remove(self._loaded_with)
        self._loaded_with = None

    @property
    def thread_count(self) -> int:
        """The size of the bindings' threadpool now, read back."""
        return int(self._lib._threadpool_get_thread_count())

    def settings(self) -> dict[str, Any]:
        return {"threads": self.thread_count, "method": self.method_name,
                "backends": list(self._runtime_cls.get().backend_registry.registered_backend_names)}

    def _io(self, count: int, meta, prefix: str) -> list[TensorInfo]:
        # a .pte keeps no tensor names: "input"/"output", numbered when there are several
        out = []
        for i in range(count):
            t = meta(i)
            shape = tuple(int(d) for d in t.sizes())
            dtype = np.dtype(SCALAR_TYPES.get(int(t.dtype()), np.float32))
            out.append(TensorInfo(f"{prefix}_{i}" if count > 1 else prefix, shape, dtype, guess_layout(shape)))
        return out

    def _inputs(self) -> list[TensorInfo]:
        return self._io(self._meta.num_inputs(), self._meta.input_tensor_meta, "input")

    def _outputs(self) -> list[TensorInfo]:
        return self._io(self._meta.num_outputs(), self._meta.output_tensor_meta, "output")

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        infos = self._in_infos
        missing = [i.name for i in infos if i.name not in feeds]
        if missing or len(feeds) != len(infos):
            raise InputError(f"executorch: inputs {sorted(feeds)} do not match the program's "
                             f"{[i.name for i in infos]}")
        args = []
        for info in infos:
            arr = feeds[info.name]
            if tuple(arr.shape) != info.shape:  # a .pte is planned for one shape
                raise InputError(f"input '{info.name}' of shape {tuple(arr.shape)} does not fit the program's "
                                 f"{info.describe()}", "a .pte program runs the shape it was exported with")
            args.append(torch.from_numpy(np.ascontiguousarray(arr, dtype=info.dtype)))  # no copy when it fits
        if self.thread_count != self._loaded_with:  # resized under us: the delegate's pool is gone
            raise InputError("ExecuTorch's threadpool was resized after this program was loaded",
                             "deactivate and activate the runner again")
        try:
            outs = self.method.execute(args)
        except Exception as e:
            raise InputError(f"executorch cannot run {self.path}: {first_line(e)}") from None
        return [o.detach().numpy().copy() if hasattr(o, "detach") else np.asarray(o) for o in outs]

    def model_size_bytes(self) -> int | None:
        return self.path.stat().st_size

    def describe(self) -> str:
        from executorch import version

        thr = ""
        if self.is_active:
            n = self.thread_count
            thr = f", {n} thread{'s' if n != 1 else ''}"
        return f"ExecuTorch {version.__version__.split('+')[0]} ({self.method_name}{thr})"



PTE = FileKind("pte", SUFFIXES, "a .pte file", ".pte files", check=check_pte)


def open_file(model, threads=None) -> ExecuTorchRunner:
    return ExecuTorchRunner(model, threads=threads)


DESCRIPTOR = RuntimeDescriptor("executorch", ("et", "xnnpack"), (PTE,), open_file, extra="executorch")

__all__ = ["ExecuTorchRunner", "import_executorch"]
