"""Distillation (edgezoo.export.distill) on a tiny model and a handful of 16x16 images."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

from edgezoo.errors import InputError  # noqa: E402
from edgezoo.export.distill import DistillConfig, agreement, distill  # noqa: E402
from edgezoo.models.batchnorm import recalibrate_bn  # noqa: E402
from edgezoo.models.layers import ConvBNAct  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402


def net(act) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        ConvBNAct(3, 8, 3, stride=2, activation=act), ConvBNAct(8, 16, 3, activation=act),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 5),
    )
    randomize_bn(model)
    with torch.no_grad():
        model[-1].weight.normal_(0, 1.0)  # logits of a size that a KL loss notices
    return model.eval()


def teacher_student():
    teacher = net(nn.Hardswish)
    student = net(nn.ReLU)
    student.load_state_dict(teacher.state_dict())  # starts from the original weights, as the lite path does
    return teacher, student


def images(n: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 16, generator=g) + torch.randn(n, 3, 1, 1, generator=g)


def cfg(**kw) -> DistillConfig:
    return DistillConfig(**{"steps": 30, "batch_size": 8, "lr": 3e-3, **kw})


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_goes_down_and_the_inputs_are_left_alone():
    teacher, student = teacher_student()
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_state = {k: v.clone() for k, v in student.state_dict().items()}
    x = images()
    res = distill(student, teacher, x, cfg())
    assert res.steps_done == 30 and len(res.losses) == 30 and res.stopped_by == "steps"
    assert res.final_loss < 0.5 * res.first_loss
    assert agreement(teacher, res.model, x) >= agreement(teacher, student, x)
    assert all(torch.equal(t_state[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(s_state[k], v) for k, v in student.state_dict().items())
    assert not any(p.requires_grad for p in res.model.parameters())


def test_same_seed_same_result_other_seed_other_result():
    teacher, student = teacher_student()
    x = images()
    a = distill(student, teacher, x, cfg(steps=8))
    b = distill(student, teacher, x, cfg(steps=8))
    c = distill(student, teacher, x, cfg(steps=8, seed=1))
    assert a.losses == b.losses and same_weights(a.model, b.model)
    assert not same_weights(a.model, c.model)


def test_batchnorm_statistics_are_recalibrated_then_frozen():
    teacher, student = teacher_student()
    x = images()
    res = distill(student, teacher, x, cfg(steps=5))
    expected = recalibrate_bn(net(nn.ReLU).requires_grad_(False), x, 8)
    expected.load_state_dict({**student.state_dict(), **{k: v for k, v in expected.state_dict().items()
                                                        if "running" in k or "num_batches" in k}})
    got = res.model.state_dict()
    for k, v in expected.state_dict().items():
        if "running" in k:  # training (in eval mode) never moved the statistics taken before it
            assert torch.allclose(got[k], v, atol=1e-6), k


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    teacher, student = teacher_student()
    x = images()
    whole = distill(student, teacher, x, cfg(steps=10))

    ckpt = tmp_path / "distill.ckpt"

    def interrupt(step, loss):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(student, teacher, x, cfg(steps=10, checkpoint=ckpt, checkpoint_every=3), on_step=interrupt)
    assert ckpt.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["distill.ckpt"]  # no temporary file left behind
    resumed = distill(student, teacher, x, cfg(steps=10, checkpoint=ckpt, checkpoint_every=3))
    assert resumed.resumed_from == 7 and resumed.steps_done == 10
    assert resumed.losses == whole.losses
    assert same_weights(resumed.model, whole.model)
    # A finished checkpoint resumes to the same end without training again.
    again = distill(student, teacher, x, cfg(steps=10, checkpoint=ckpt))
    assert again.resumed_from == 10 and same_weights(again.model, whole.model)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    teacher, student = teacher_student()
    x = images()
    ckpt = tmp_path / "c.ckpt"
    distill(student, teacher, x, cfg(steps=2, checkpoint=ckpt))
    with pytest.raises(InputError, match="another run"):
        distill(student, teacher, x, cfg(steps=2, checkpoint=ckpt, lr=1e-4))
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        distill(student, teacher, x, cfg(steps=2, checkpoint=ckpt))


def test_time_budget_stops_at_a_step_boundary():
    teacher, student = teacher_student()
    res = distill(student, teacher, images(), cfg(steps=1000, time_budget_s=0.0))
    assert res.stopped_by == "time budget" and res.steps_done == 0


def test_labels_add_a_supervised_term_and_are_checked():
    teacher, student = teacher_student()
    x = images()
    labels = torch.arange(len(x)) % 5
    plain = distill(student, teacher, x, cfg(steps=3))
    with_labels = distill(student, teacher, x, cfg(steps=3), labels=labels)
    assert with_labels.losses[0] > plain.losses[0]  # the same first batch, plus a cross-entropy term
    with pytest.raises(InputError, match="one class index per image"):
        distill(student, teacher, x, cfg(steps=3), labels=labels[:5])


def test_bad_inputs_are_clear_errors():
    teacher, student = teacher_student()
    with pytest.raises(InputError, match="at least 1"):
        distill(student, teacher, images(), cfg(steps=0))
    with pytest.raises(InputError, match="batch of images"):
        distill(student, teacher, torch.zeros(0, 3, 16, 16), cfg())
