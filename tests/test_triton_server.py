"""A real Triton server (the `tritonserver` 2.51 binary of the nvidia-pytriton wheel) loads repositories
that `edgezoo triton` wrote, on 127.0.0.1, and answers through tritonclient.

The wheel's server has the Python backend and no onnxruntime backend, so:
- the Python-backend variant (``--backend python``: 1/model.py runs 1/model.onnx with onnxruntime) is loaded
  and inferred, JSON and binary, batched, and compared with onnxruntime called directly;
- the default ``onnxruntime_onnx`` entry is loaded as far as this server goes: it parses the config and
  reports that the backend is missing (checked, and said plainly), never a config error.
Skipped only when the binary is not there or cannot start here (the reason is given).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (edgezoo[test]) is not installed")

from edgezoo.onnx_meta import ModelMetadata, set_metadata  # noqa: E402
from edgezoo.serve.triton import write_triton_repository  # noqa: E402


def _wheel_server() -> tuple[Path, Path, Path]:
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except Exception:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton): no tritonserver")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    libs = root.parents[1] / "nvidia_pytriton.libs"
    if not binary.is_file():
        pytest.skip(f"the nvidia-pytriton wheel has no tritonserver binary at {binary}")
    return root, binary, libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(path: Path) -> Path:
    """(batch, 4) -> logits (batch, 3) and their argmax: a MatMul classifier with edgezoo metadata."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], (np.arange(12, dtype=np.float32) - 6) / 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "g", [x], [y], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    set_metadata(proto, ModelMetadata(model="toy", labels=["a", "b", "c"], num_classes=3))
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    root, binary, libs = _wheel_server()
    d = tmp_path_factory.mktemp("triton")
    # The Python backend wants its stub for this Python beside libtriton_python.so: assemble a backend folder
    # from the wheel's parts (the installed package is left as it is).
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        pytest.skip(f"the wheel has no Python backend stub for Python {ver}")
    backend = d / "backends" / "python"
    backend.mkdir(parents=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(root / "backends" / "python" / f, backend / f)
    shutil.copy(stub, backend / stub.name)
    src = _model(d / "toy.onnx")
    repo = d / "repo"
    write_triton_repository(src, repo, name="toy_py", backend="python", max_queue_delay_us=20000)
    write_triton_repository(src, repo, name="toy_ort")  # the default: onnxruntime_onnx
    port = _free_port()
    env = {**os.environ,
           "LD_LIBRARY_PATH": os.pathsep.join([str(libs), sysconfig.get_config_var("LIBDIR") or "",
                                               os.environ.get("LD_LIBRARY_PATH", "")]),
           # the stub's Python needs numpy and onnxruntime: this environment's packages
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))}
    log = open(d / "triton.log", "w+")
    cmd = [str(binary), "--model-repository", str(repo), "--backend-directory", str(d / "backends"),
           "--http-address", "127.0.0.1", "--http-port", str(port), "--allow-grpc", "false",
           "--allow-metrics", "false", "--exit-on-error", "false", "--strict-readiness", "false"]
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    except OSError as e:
        pytest.skip(f"tritonserver cannot start here: {e}")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        for _ in range(240):  # bounded: 60 s
            if proc.poll() is not None:
                log.seek(0)
                text = log.read()
                if "toy_py" in text or "toy_ort" in text:  # it got as far as our models: theirs is the failure
                    pytest.fail(f"tritonserver exited loading the repository ({proc.returncode}): {text[-3000:]}")
                pytest.skip(f"tritonserver cannot run here (exited {proc.returncode} before loading any "
                            f"model): {text[-800:]}")
            try:
                if client.is_server_live() and client.is_model_ready("toy_py"):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        else:
            log.seek(0)
            pytest.fail(f"tritonserver did not load toy_py within 60 s: {log.read()[-3000:]}")
        yield client, src, d / "triton.log", f"127.0.0.1:{port}"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_triton_runs_the_python_backend_repository(triton):
    import onnxruntime as ort

    client, src, _, url = triton
    meta = client.get_model_metadata("toy_py")
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["shape"] == [-1, 4]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for binary in (False, True):
        inp = httpclient.InferInput("x", [5, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        got = client.infer("toy_py", [inp], outputs=[out]).as_numpy("logits")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # several concurrent requests go through Triton's dynamic batcher into one model.py call
    reqs = []
    for i in range(4):
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x[i:i + 1], binary_data=True)
        reqs.append(inp)
    c4 = httpclient.InferenceServerClient(url, concurrency=4)
    try:
        pending = [c4.async_infer("toy_py", [r]) for r in reqs]
        for i, p in enumerate(pending):
            np.testing.assert_allclose(p.get_result().as_numpy("logits"), want[i:i + 1], rtol=0, atol=1e-5)
    finally:
        c4.close()


def test_the_default_onnxruntime_entry_is_parsed_and_needs_the_onnxruntime_backend(triton):
    client = triton[0]
    # This server has no onnxruntime backend: the entry is not ready, and the reason is the missing backend
    # (a config Triton could not parse would say so instead).
    assert not client.is_model_ready("toy_ort")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert "toy_ort" in index
    reason = index["toy_ort"].get("reason", "")
    assert "unable to find backend library for backend 'onnxruntime'" in reason, reason
