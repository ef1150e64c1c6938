"""What reading a foreign ONNX file may cost: guards against files that declare more than they hold.

A valid ONNX file of 100 bytes can declare a tensor of 2**40 values, and each tool that looks at it may build
that tensor: onnxruntime's symbolic shape inference fills an int64 ``ConstantOfShape`` with numpy, a run
allocates every tensor. The profiler needs shapes, never values, and a runtime needs no constant that large,
so these refuse before anything is built (``check_model_bounds`` is what a runtime calls before loading):

* ``check_declared_sizes``: every initializer (and Constant) holds as many values as its dims declare; a
  tensor that declares 2**40 floats and holds 16 bytes is a damaged or forged file, not 8796 GB of params.
* ``check_computed_constants``: a tensor computed from constants alone (what runtimes fold when they load
  the file) whose inferred shape is larger than ``MAX_COMPUTED_BYTES`` is refused, naming the node.
* ``symbolic_shapes``: onnxruntime's symbolic shape inference with a bound on what it materialises, and
  without the temporary file it writes into the current folder when it cannot finish.
* ``memory_budget``: the last-resort run that finds the remaining shapes gets at most half of this
  machine's memory (an address-space limit, lifted afterwards): one line instead of the kernel's OOM killer.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

from edgezoo.errors import InputError

# Computed constants of real models are shape vectors, masks and small tables; a gigabyte is no model's.
MAX_COMPUTED_BYTES = 1 << 30
_FOUR_BIT = {"INT4", "UINT4", "FLOAT4E2M1"}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


class TensorTooLarge(InputError):
    """A file that would make edgezoo build a tensor larger than it allows."""


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except Exception:  # exotic types: a byte
        return 1


def _held(t) -> tuple[int, int]:
    """(values held, values declared) of a TensorProto with its data inside the file."""
    import onnx

    declared = math.prod(t.dims)
    kind = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type else ""
    if t.raw_data:
        if kind in _FOUR_BIT:
            return len(t.raw_data) * 2, declared + declared % 2
        return len(t.raw_data) // max(1, _itemsize(t.data_type)), declared
    held = sum(len(getattr(t, f)) for f in _TYPED_FIELDS)
    if kind.startswith("COMPLEX"):
        held //= 2
    elif kind in _FOUR_BIT:  # two values packed per int32_data entry
        return held * 2, declared + declared % 2
    return held, declared


def _tensors(graph) -> Iterator[tuple[str, object]]:
    """(what, TensorProto) for the initializers and Constant values of ``graph`` and its subgraphs."""
    import onnx

    for t in graph.initializer:
        yield f"initializer '{t.name}'", t
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield f"the value of {n.op_type} node '{n.name or n.output[0]}'", a.t
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _tensors(g)


def check_declared_sizes(proto, label: str) -> None:
    """InputError when a tensor stored in the file holds fewer or more values than its dims declare."""
    import onnx

    for what, t in _tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
            continue  # external data is sized by its own file; strings have no fixed width
        if any(d < 0 for d in t.dims):
            raise InputError(f"{label} is inconsistent: {what} has a negative dimension {list(t.dims)}",
                             "the file is damaged or was made by hand; re-export it")
        held, declared = _held(t)
        if held != declared:
            dtype = onnx.TensorProto.DataType.Name(t.data_type).lower()
            raise InputError(f"{label} is inconsistent: {what} declares {declared:,} {dtype} values "
                             f"({_gib(declared * _itemsize(t.data_type))}, dims {list(t.dims)}) but holds {held:,}",
                             "the file is damaged or was made by hand; re-export it")


def constant_tensors(graph) -> tuple[set[str], set[int]]:
    """Tensors that depend on no graph input (the weights and whatever a runtime folds at load time), and the
    ids of the nodes that compute them."""
    const = {t.name for t in graph.initializer}
    const_nodes = set()
    for n in graph.node:
        real_inputs = [i for i in n.input if i]
        if n.op_type in ("Constant", "Shape", "Size") or (real_inputs and all(i in const for i in real_inputs)):
            const.update(o for o in n.output if o)
            const_nodes.add(id(n))
    return const, const_nodes


def check_model_bounds(model, label: str) -> None:
    """Before a runtime loads ``model`` (path, bytes or ModelProto): its stored tensors hold what they declare,
    and no tensor computed from constants alone exceeds MAX_COMPUTED_BYTES (onnx's shape inference, with data
    propagation, sizes them without building them). A file onnx cannot parse or infer is left to the runtime,
    which says why in its own words."""
    import onnx

    try:
        if isinstance(model, onnx.ModelProto):
            proto = model
        elif isinstance(model, (bytes, bytearray)):
            proto = onnx.load_from_string(bytes(model))
        else:
            proto = onnx.load(os.fspath(model), load_external_data=False)
    except Exception:  # not ONNX at all, or truncated: the runtime's load says so
        return
    check_declared_sizes(proto, label)
    try:
        graph = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph
    except Exception:  # inference gives up on some valid files; the runtime decides
        return
    info = {}
    for vi in [*graph.value_info, *graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.HasField("shape") and all(d is not None for d in dims):
            info[vi.name] = (dims, vi.type.tensor_type.elem_type)
    check_computed_constants(graph, info, constant_tensors(graph)[0], label)


def check_computed_constants(graph, info: dict, const: set[str], label: str) -> None:
    """Refuse a tensor computed from constants alone whose inferred shape exceeds MAX_COMPUTED_BYTES:
    runtimes fold such tensors when they load a file, and shape tools evaluate them."""
    initializers = {t.name for t in graph.initializer}
    for n in graph.node:
        for o in n.output:
            if not o or o not in const or o in initializers:
                continue
            shape, elem = info.get(o, (None, 1))
            if shape is None:
                continue
            nbytes = math.prod(shape) * _itemsize(elem)
            if nbytes > MAX_COMPUTED_BYTES:
                raise TensorTooLarge(
                    f"{label}: {n.op_type} node '{n.name or o}' computes a {'x'.join(map(str, shape))} tensor "
                    f"({_gib(nbytes)}) from constants alone; edgezoo builds none larger than "
                    f"{_gib(MAX_COMPUTED_BYTES)}", "a real model's constants are far smaller: is the file damaged?")


def symbolic_shapes(work, label: str):
    """onnxruntime's symbolic shape inference on ``work``, or None where it cannot finish or is missing.

    Its ``ConstantOfShape`` handler fills int64 outputs with numpy (16 GiB for a shape of [2**31]), so a
    subclass refuses those beyond MAX_COMPUTED_BYTES first; and its ``infer_shapes`` saves
    ``sym_shape_infer_temp.onnx`` into the current folder when incomplete, so the loop is run here.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset, is_literal
    except ImportError:
        return None

    class Bounded(SymbolicShapeInference):
        def _infer_ConstantOfShape(self, node):  # noqa: N802 (the name onnxruntime dispatches on)
            dims = self._get_int_or_float_values(node)[0]
            dims = dims if isinstance(dims, list) or dims is None else [dims]
            if dims is not None and all(is_literal(d) for d in dims):
                nbytes = math.prod(int(d) for d in dims) * 8
                if nbytes > MAX_COMPUTED_BYTES:
                    raise TensorTooLarge(
                        f"{label}: ConstantOfShape node '{node.name or node.output[0]}' makes a "
                        f"{'x'.join(str(int(d)) for d in dims)} tensor ({_gib(nbytes)} as int64); edgezoo "
                        f"builds none larger than {_gib(MAX_COMPUTED_BYTES)}",
                        "a real model's constants are far smaller: is the file damaged?")
            return super()._infer_ConstantOfShape(node)

    opset = get_opset(work)
    if not opset or opset < 7:
        return None
    try:
        inference = Bounded(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
        inference._preprocess(work)
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
    except TensorTooLarge:
        raise
    except Exception:  # unknown ops, or a pattern it does not model: the run decides
        return None
    return inference.out_mp_ if complete else None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def memory_budget(fraction: float = 0.5) -> Iterator[None]:
    """Within the block the process may map at most ``fraction`` of physical memory beyond what it has now,
    so an allocation past it fails (MemoryError, or the runtime's own error) instead of the kernel killing
    the process. Lifted on exit; a no-op where address-space limits are unavailable."""
    try:
        import resource
    except ImportError:
        yield
        return
    total = physical_memory()
    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        mapped = None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if total is None or mapped is None:
        yield
        return
    limit = mapped + int(total * fraction)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield  # a tighter limit is already set
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check_runnable(profile, label: str) -> None:
    """Before running the model (--measure): no tensor it computes may exceed half of this machine's memory
    (a static shape can be any size; running it would allocate it)."""
    total = physical_memory()
    largest = max(profile.nodes, key=lambda n: n.bytes_written, default=None)
    if total and largest is not None and largest.bytes_written > total // 2:
        raise TensorTooLarge(f"{label}: node '{largest.name}' writes {_gib(largest.bytes_written)}, more than half "
                             f"of this machine's {_gib(total)}; it can be counted but not run here",
                             "drop --measure, or pass a smaller --input-size or --batch")
