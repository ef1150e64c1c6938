"""ncnn (Tencent's mobile runtime): a .param graph with its .bin weights through ncnn's Python bindings.

ncnn runs one image at a time (its Mat is C x H x W, no batch axis): a batch is run item by item, each in its
own Extractor, and the outputs stacked. ``ncnn.Mat(array)`` borrows the numpy buffer rather than copying it,
so every array handed to ``Extractor.input`` is kept referenced here until ``extract`` has returned (a
temporary array would be freed and its memory reused under ncnn: garbage outputs). Threads:
``Net.opt.num_threads``, read back from the net. Input shape: what the .param's Input layer declares
(``0=w 1=h 2=c``; edgezoo's ncnn target writes it), else dynamic. Vulkan is left off (CPU). No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, check_model_file, check_threads, guess_layout
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor

SUFFIXES = (".param",)
MAGIC = "7767517"  # the first line of every text .param ncnn reads
MAX_PARAM_BYTES = 64 << 20


def import_ncnn():
    try:
        import ncnn
    except ImportError:
        raise MissingDependencyError("ncnn", "pip install 'edgezoo[ncnn]'", "the ncnn runtime needs it") from None
    return ncnn


def read_param(path: Path) -> list[list[str]]:
    """The layer lines of a text .param (type, name, input/output counts, blobs, key=value...), checked: the
    magic line, layer and blob counts that fit the file, and counts of inputs/outputs each line declares."""
    def refuse(why: str) -> None:
        raise InputError(f"{path} is not an ncnn .param file: {why}",
                         "is the file complete, and of the kind its suffix says?")

    size = path.stat().st_size
    if size > MAX_PARAM_BYTES:
        refuse(f"{size} bytes is more than a graph description takes")
    try:
        lines = [ln.split() for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        refuse("it is not text")
    if not lines or lines[0] != [MAGIC]:
        refuse(f"its first line is not the magic number {MAGIC}")
    if len(lines) < 2 or len(lines[1]) != 2 or not all(t.isdigit() for t in lines[1]):
        refuse("its second line is not the layer and blob counts")
    layers, blobs = (int(t) for t in lines[1])
    if layers != len(lines) - 2 or not 0 < blobs <= 2 * layers * 64:
        refuse(f"it declares {layers} layers and {blobs} blobs in {len(lines) - 2} layer lines")
    for k, ln in enumerate(lines[2:], 3):
        if len(ln) < 4 or not ln[2].isdigit() or not ln[3].isdigit() or len(ln) < 4 + int(ln[2]) + int(ln[3]):
            refuse(f"line {k} is not a layer (type name inputs outputs blobs...)")
    return lines[2:]


def check_param(path: Path) -> None:
    read_param(path)


def declared_inputs(layers: list[list[str]]) -> dict[str, tuple[int | None, int | None, int | None]]:
    """Input layers' blob -> (c, h, w) as declared (``0=w 1=h 2=c``), None where not declared."""
    out = {}
    for ln in layers:
        if ln[0] == "Input":
            n_in, n_out = int(ln[2]), int(ln[3])
            params = dict(kv.split("=", 1) for kv in ln[4 + n_in + n_out:] if "=" in kv)
            dim = lambda k: int(params[k]) if params.get(k, "0").lstrip("-").isdigit() and int(params.get(k, 0)) > 0 else None
            for blob in ln[4 + n_in:4 + n_in + n_out]:
                out[blob] = (dim("2"), dim("1"), dim("0"))
    return out


class NcnnRunner(Runner):
    """A .param + .bin pair in one ncnn Net on the CPU."""

    name = "ncnn"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        check_threads(threads)
        self.path = Path(path)
        if self.path.suffix.lower() not in SUFFIXES:
            raise InputError(f"ncnn runs .param files (with their .bin); {self.path} is not one")
        check_model_file(self.path, "an ncnn .param file")
        self.bin = self.path.with_suffix(".bin")
        if not self.bin.is_file():
            raise InputError(f"{self.path} has no weights file {self.bin.name} beside it",
                             "an ncnn model is a .param and a .bin with the same name")
        self.threads = threads
        self._ncnn = import_ncnn()
        self.net = None
        self._declared: dict[str, tuple] = {}
        self._in: list[str] = []
        self._out: list[str] = []
        self._out_shapes: dict[str, tuple] = {}
        self._borrowed: list[np.ndarray] = []  # arrays ncnn Mats point into, alive until extract returns

    def _activate(self) -> None:
        ncnn = self._ncnn
        layers = read_param(self.path)
        self._declared = declared_inputs(layers)
        missing = sorted({ln[0] for ln in layers if ncnn.create_layer(ln[0]) is None})
        if missing:  # ncnn itself only prints "layer X not exists or registered" and fails the load
            raise InputError(f"this ncnn build has no {', '.join(missing)} layer ({self.path} uses "
                             f"{'it' if len(missing) == 1 else 'them'})",
                             "run the model on another runtime, or end the graph before that layer")
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        if self.threads is not None:
            net.opt.num_threads = int(self.threads)
        if net.load_param(os.fspath(self.path)) != 0:
            raise InputError(f"ncnn cannot load {self.path}", "is it a complete .param file from pnnx or ncnn's tools?")
        if net.load_model(os.fspath(self.bin)) != 0:
            raise InputError(f"ncnn cannot load the weights {self.bin}", "is the .bin complete and the .param's own?")
        self.net = net
        self._in, self._out = list(net.input_names()), list(net.output_names())
        if not self._in or not self._out:
            self.net = None
            raise InputError(f"{self.path} declares no inputs or no outputs", "is it a complete .param file?")
        self._out_shapes = {}
        if all(all(d is not None for d in self._declared.get(n, (None,))) for n in self._in):
            # ncnn's graph holds no output shapes: learn them from one run on zeros
            outs = self._run_one({n: np.zeros(self._declared[n], np.float32) for n in self._in})
            self._out_shapes = {n: o.shape for n, o in zip(self._out, outs)}

    def _deactivate(self) -> None:
        self.net = None
        self._borrowed = []

    def _inputs(self) -> list[TensorInfo]:
        out = []
        for name in self._in:
            c, h, w = self._declared.get(name, (None, None, None))
            shape = ("batch", c, h, w)
            out.append(TensorInfo(name, shape, np.dtype(np.float32), "NCHW"))
        return out

    def _outputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, ("batch", *self._out_shapes[n]) if n in self._out_shapes else ("batch",),
                           np.dtype(np.float32), guess_layout(("batch", *self._out_shapes.get(n, ()))))
                for n in self._out]

    def _run_one(self, items: dict[str, np.ndarray]) -> list[np.ndarray]:
        ncnn = self._ncnn
        ex = self.net.create_extractor()
        try:
            for name, arr in items.items():
                arr = np.ascontiguousarray(arr, dtype=np.float32)
                self._borrowed.append(arr)  # ncnn.Mat(arr) borrows arr's buffer: keep it alive until extract
                ex.input(name, ncnn.Mat(arr))
            outs = []
            for name in self._out:
                code, mat = ex.extract(name)
                if code != 0:
                    raise InputError(f"ncnn cannot run {self.path}: extracting '{name}' returned {code}",
                                     "check the input size against the model's inputs")
                outs.append(np.array(mat, dtype=np.float32, copy=True))
            return outs
        finally:
            self._borrowed = []

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if sorted(feeds) != sorted(self._in):
            raise InputError(f"ncnn: inputs {sorted(feeds)} do not match the model's {self._in}")
        batch = None
        for name, arr in feeds.items():
            c, h, w = self._declared.get(name, (None, None, None))
            if arr.ndim != 4 or any(d is not None and d != s for d, s in zip((c, h, w), arr.shape[1:])):
                raise InputError(f"input '{name}' of shape {tuple(arr.shape)} does not fit the model's "
                                 f"{self._inputs()[self._in.index(name)].describe()}")
            if batch is not None and arr.shape[0] != batch:
                raise InputError("ncnn: every input needs the same batch")
            batch = arr.shape[0]
        results = [self._run_one({n: feeds[n][b] for n in self._in}) for b in range(batch)]
        return [np.stack([r[k] for r in results]) for k in range(len(self._out))]

    @property
    def thread_count(self) -> int | None:
        return int(self.net.opt.num_threads) if self.net is not None else None

    def settings(self) -> dict[str, Any]:
        opt = self.net.opt if self.net is not None else None
        return {"threads": self.thread_count if opt is not None else self.threads, "threads_asked": self.threads,
                "fp16_storage": bool(opt.use_fp16_storage) if opt is not None else None,
                "winograd": bool(opt.use_winograd_convolution) if opt is not None else None}

    def model_size_bytes(self) -> int | None:
        return self.path.stat().st_size + self.bin.stat().st_size

    def describe(self) -> str:
        n = self.thread_count if self.is_active else self.threads
        thr = f", {n} thread{'s' if n != 1 else ''}" if n else ""
        return f"ncnn {getattr(self._ncnn, '__version__', '')} (CPU{thr})".replace("ncnn  ", "ncnn ")


PARAM = FileKind("param", SUFFIXES, "an ncnn .param file", "ncnn .param + .bin pairs", side_files=(".bin",),
                 check=check_param)


def open_file(model, threads=None) -> NcnnRunner:
    return NcnnRunner(model, threads=threads)


DESCRIPTOR = RuntimeDescriptor("ncnn", (), (PARAM,), open_file, extra="ncnn")

__all__ = ["NcnnRunner", "import_ncnn", "read_param", "declared_inputs", "check_param", "DESCRIPTOR"]
