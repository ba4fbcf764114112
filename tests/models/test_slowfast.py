import pytest
import torch

from stad.models import create_model
from stad.models.slowfast import SlowFast


def test_tiny_shapes_and_alpha():
    model = create_model("slowfast_tiny").eval()
    with torch.no_grad():
        slow, fast = model(torch.randn(2, 3, 8, 64, 96))
    assert slow.shape == (2, model.out_channels[0], 2, 4, 6)
    assert fast.shape == (2, model.out_channels[1], 8, 4, 6)
    assert model.out_channels == [256, 64] and model.feature_stride == 16


@pytest.mark.parametrize("alpha", [2, 4, 8])
def test_alpha_sets_slow_frames(alpha):
    model = create_model("slowfast_tiny", alpha=alpha).eval()
    with torch.no_grad():
        slow, fast = model(torch.randn(1, 3, 16, 32, 32))
    assert slow.shape[2] == 16 // alpha and fast.shape[2] == 16


def test_slow_frame_selection():
    clip = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 3, 8, 2, 2)
    strided = create_model("slowfast_tiny", alpha=4, slow_full_span=False).slow_frames(clip)
    spread = create_model("slowfast_tiny", alpha=4, slow_full_span=True).slow_frames(clip)
    assert strided[0, 0, :, 0, 0].tolist() == [0.0, 4.0]
    assert spread[0, 0, :, 0, 0].tolist() == [0.0, 7.0]  # linspace over the whole clip, as ACAR R50
    with pytest.raises(ValueError, match="divisible by alpha"):
        create_model("slowfast_tiny", alpha=4).slow_frames(torch.zeros(1, 3, 6, 8, 8))


def test_tau_and_beta():
    model = create_model("slowfast_tiny", alpha=4, tau=8, beta=0.5)
    assert model.fast_frame_step == 2
    assert model.out_channels[1] == int(8 * 0.5) * 8 * 4


def test_frozen_bn_keeps_running_stats():
    model = create_model("slowfast_tiny", frozen_bn=True).train()
    before = model.slow_bn1.running_mean.clone()
    model(torch.randn(2, 3, 8, 32, 32))
    assert torch.equal(before, model.slow_bn1.running_mean)
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    assert model.slow_bn1.weight.requires_grad
    affine_frozen = create_model("slowfast_tiny", frozen_bn=True, frozen_bn_affine=True)
    assert not affine_frozen.slow_bn1.weight.requires_grad and affine_frozen.slow_conv1.weight.requires_grad
    live = create_model("slowfast_tiny").train()
    live(torch.randn(2, 3, 8, 32, 32))
    assert not torch.equal(live.slow_bn1.running_mean, torch.zeros_like(live.slow_bn1.running_mean))


@pytest.mark.parametrize("name,layers", [("slowfast_r50", (3, 4, 6, 3)), ("slowfast_r101", (3, 4, 23, 3))])
def test_big_models_on_meta_device(name, layers):
    with torch.device("meta"):
        model = create_model(name)
    assert model.out_channels == [2048, 256]
    assert len(model.slow_res3) == layers[2] and len(model.fast_res3) == layers[2]


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        SlowFast((1, 1, 1, 1), width=8, beta=0.25)(torch.zeros(3, 8, 32, 32))
