import pytest
import torch
import torch.nn.functional as F

from stad.models.losses import AVA_POSE_INDICES, ExclusiveSoftmaxBCELoss, SigmoidBCELoss, build_loss


def _data(n=6, k=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 3
    targets = (torch.rand(n, k, generator=g) > 0.7).float()
    return logits, targets


def test_sigmoid_bce_matches_torch_and_class_weights():
    logits, targets = _data()
    assert torch.allclose(SigmoidBCELoss()(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))
    weights = torch.linspace(0.5, 2.0, 20)
    expected = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).mean()
    assert torch.allclose(SigmoidBCELoss(weights)(logits, targets), expected)


def _acar_pose_softmax_criterion(logits, targets):
    """ACAR-Net's losses.ava_pose_softmax_criterion (first 13 classes softmax), written out."""
    probs = torch.cat([logits[:, :13].softmax(1), logits[:, 13:].sigmoid()], 1).clamp(0, 1)
    return F.binary_cross_entropy(probs, targets)


def test_pose_softmax_matches_acar_criterion_and_activation():
    logits, targets = _data(k=60)
    loss_fn = ExclusiveSoftmaxBCELoss(AVA_POSE_INDICES)
    assert torch.allclose(loss_fn(logits, targets), _acar_pose_softmax_criterion(logits, targets), atol=1e-5)
    probs = loss_fn.activation(logits)
    assert torch.allclose(probs[:, :13].sum(1), torch.ones(6), atol=1e-5)
    assert torch.allclose(probs[:, 13:], logits[:, 13:].sigmoid(), atol=1e-6)


def test_exclusive_set_anywhere_and_gradients_finite():
    logits, targets = _data(k=8)
    logits = logits.clone().requires_grad_()
    loss_fn = build_loss("pose_softmax", exclusive=[1, 4, 6], class_weights=[1.0] * 8)
    loss = loss_fn(logits * 10, targets)  # saturated probabilities
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    probs = loss_fn.activation(logits.detach())
    assert torch.allclose(probs[:, [1, 4, 6]].sum(1), torch.ones(6), atol=1e-5)


@pytest.mark.parametrize("loss_fn", [SigmoidBCELoss(), ExclusiveSoftmaxBCELoss()])
def test_empty_batch_gives_zero_connected_loss(loss_fn):
    logits = torch.zeros(0, 60, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(0, 60))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0, 60)


def test_bad_inputs():
    with pytest.raises(ValueError, match="must both be"):
        SigmoidBCELoss()(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="class_weights"):
        SigmoidBCELoss([1.0, 2.0])(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="exclusive index"):
        ExclusiveSoftmaxBCELoss()(torch.zeros(2, 10), torch.zeros(2, 10))
    with pytest.raises(KeyError):
        build_loss("focal")


def test_functional_forms():
    from stad.models.losses import pose_softmax_bce, sigmoid_bce
    logits, targets = _data(k=60)
    assert torch.allclose(sigmoid_bce(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))
    assert torch.allclose(pose_softmax_bce(logits, targets), _acar_pose_softmax_criterion(logits, targets), atol=1e-5)
