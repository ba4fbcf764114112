import pytest
import torch

from stad.models.heads import ACARHead, LinearHead, acar_per_clip_reference
from stad.models.heads.acar import RelativePosition, conv1x1, pooled_conv
from stad.models.heads.common import left_right_asymmetry
from stad.models.neck import RoIBatch, RoINeck


def _boxes(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 0.6
        wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def _head(**kw):
    torch.manual_seed(0)
    args = dict(reduce_dim=24, hidden_dim=16, depth=2)
    args.update(kw)
    return ACARHead(20, 7, **args).eval()


@pytest.mark.parametrize("counts", [(3, 0, 1, 5), (1,), (2, 2), (0, 4, 0)])
@pytest.mark.parametrize("variant", [dict(), dict(depth=1, mlp_1x1=True), dict(downsample="none", depth=3),
                                     dict(channels_last=False), dict(depth=0), dict(relative_position=True),
                                     dict(relative_position=True, channels_last=False, depth=1),
                                     dict(relative_position=True, position_gate=True)])
def test_batched_acar_head_equals_per_clip_loop(counts, variant):
    head = _head(**variant)
    if head.position is not None and head.position.gate is not None:  # zero-initialised: make it matter
        torch.nn.init.normal_(head.position.gate.weight)
    feats = torch.randn(len(counts), 20, 10, 12)
    rois = RoINeck().eval()(_boxes(counts))
    with torch.no_grad():
        batched = head(feats, rois)
        loop = acar_per_clip_reference(head, feats, rois)
    assert batched.shape == (sum(counts), 7)
    assert torch.allclose(batched, loop, atol=1e-5, rtol=1e-5), (batched - loop).abs().max()
    with torch.no_grad():
        loop_fast_kernels = acar_per_clip_reference(head, feats, rois, fast_kernels=True)
    assert torch.allclose(loop_fast_kernels, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("position", [dict(), dict(relative_position=True),
                                      dict(relative_position=True, position_gate=True)])
def test_batched_head_gradients_equal_loop_gradients(train, position):
    """Eval mode folds the last HR2O conv into the pooling; training mode runs it in full."""
    head = _head(relation_dropout=0.0, **position).train(train)
    if head.position is not None and head.position.gate is not None:  # zero-initialised: make it matter
        torch.nn.init.normal_(head.position.gate.weight)
    feats = torch.randn(4, 20, 9, 9, requires_grad=True)
    rois = RoINeck().eval()(_boxes((2, 0, 1, 3)))  # a zero-box and a one-box clip
    grads = []
    for fn in (head, lambda f, r: acar_per_clip_reference(head, f, r)):
        head.zero_grad()
        feats.grad = None
        (fn(feats, rois) ** 2).sum().backward()
        grads.append([feats.grad.clone()] + [p.grad.clone() for p in head.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_relations_stay_within_a_clip():
    """A box in clip 1 must not change the logits of clip 0 (attention is per clip)."""
    head = _head()
    feats = torch.randn(2, 20, 8, 8)
    base = _boxes((2, 1))
    with torch.no_grad():
        a = head(feats, RoINeck()(base))
        b = head(feats, RoINeck()([base[0], torch.cat([base[1], _boxes((1,), seed=5)[0]])]))
    assert torch.allclose(a[:2], b[:2], atol=1e-6)
    # ...but another box in the SAME clip does change them (HR2O mixes actors of a clip)
    with torch.no_grad():
        c = head(feats, RoINeck()([torch.cat([base[0], _boxes((1,), seed=5)[0]]), base[1]]))
    assert not torch.allclose(a[:2], c[:2], atol=1e-4)


@pytest.mark.parametrize("head_cls", [ACARHead, LinearHead])
def test_heads_without_boxes_return_empty_logits_connected_to_params(head_cls):
    head = head_cls(20, 4) if head_cls is LinearHead else _head()
    rois = RoINeck()([torch.zeros(0, 4), torch.zeros(0, 4)], reference=torch.zeros(1))
    feats = torch.randn(2, 20, 6, 6, requires_grad=True)
    out = head(feats, rois)
    assert out.shape == (0, head.num_classes)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in head.parameters())
    assert feats.grad is not None and feats.grad.abs().sum() == 0  # the backbone stays in the graph too


def test_single_box_clip_attention_is_identity_on_values():
    """With one actor the softmax over actors is 1: relation == conv_v(x)."""
    head = _head(depth=1)
    layer = head.hr2o[0]
    x = torch.randn(1, 16, 4, 4)
    from stad.models.heads.acar import PaddedLayout
    with torch.no_grad():
        out = layer(x, PaddedLayout((1,), x.device))
        expected = x + layer.dp(layer.conv(torch.relu(layer.norm(layer.conv_v(x)))))
    assert torch.allclose(out, expected, atol=1e-6)


def test_roi_batch_and_neck_jitter():
    neck = RoINeck(jitter_scale=0.1)
    boxes = _boxes((3, 0, 2))
    neck.eval()
    r = neck(boxes)
    assert isinstance(r, RoIBatch) and r.counts == (3, 0, 2) and r.rois.shape == (5, 5)
    assert r.clip_index.tolist() == [0, 0, 0, 2, 2]
    assert torch.equal(r.rois[:, 1:], torch.cat(boxes))
    neck.train()
    torch.manual_seed(0)
    j = neck(boxes).rois[:, 1:]
    assert not torch.allclose(j, torch.cat(boxes))
    assert (j >= 0).all() and (j <= 1).all() and (j[:, 2:] > j[:, :2]).all()
    size = torch.cat(boxes)[:, 2:] - torch.cat(boxes)[:, :2]
    assert ((j - torch.cat(boxes)).abs() <= 0.1 * size.repeat(1, 2) + 1e-6).all()
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        neck([boxes[0], torch.zeros(2, 3)])


def test_acar_head_rejects_too_small_maps():
    with pytest.raises(ValueError, match="at least 3x3"):
        _head()(torch.randn(1, 20, 2, 5), RoINeck()(_boxes((1,))))


@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0), (3, 0), (5, 2), (3, 2)])
def test_pooled_conv_equals_mean_of_conv(kernel, padding):
    conv = torch.nn.Conv2d(6, 4, kernel, padding=padding, bias=False)
    x = torch.randn(3, 6, 7, 5)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        assert torch.allclose(pooled_conv(xl, conv), conv(xl).mean((2, 3)), atol=1e-6)


def test_conv1x1_equals_conv2d():
    x = torch.randn(2, 6, 5, 4)
    w = torch.randn(3, 6, 1, 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = conv1x1(x.contiguous(memory_format=layout), w)
        assert torch.allclose(out, torch.nn.functional.conv2d(x, w), atol=1e-6)
        assert torch.allclose(conv1x1(x, w[:, :, 0, 0]), out, atol=1e-6)


def test_pooled_conv_rejects_convs_it_cannot_fold():
    x = torch.randn(1, 4, 5, 5)
    for conv in (torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2, bias=False),
                 torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", bias=False)):
        with pytest.raises(ValueError, match="pooled_conv"):
            pooled_conv(x, conv)


@pytest.mark.parametrize("mlp_1x1", [False, True])
def test_hr2o_pooled_output_equals_mean_of_full_output(mlp_1x1):
    """Eval mode folds the output conv into the mean; training mode (dropout active) computes it in full."""
    from stad.models.heads.acar import PaddedLayout
    layer = _head(depth=1, mlp_1x1=mlp_1x1).hr2o[0]
    x = torch.randn(5, 16, 4, 6).contiguous(memory_format=torch.channels_last)
    layout = PaddedLayout((2, 0, 3), x.device)
    with torch.no_grad():
        assert torch.allclose(layer.forward_pooled(x, layout), layer(x, layout).mean((2, 3)), atol=1e-6)
        layer.train()
        torch.manual_seed(3)
        pooled = layer.forward_pooled(x, layout)
        torch.manual_seed(3)
        assert torch.equal(pooled, layer(x, layout).mean((2, 3)))  # same dropout draw, same path


def test_relative_position_offsets_are_in_box_heights():
    """Cell centres of a 2 x 4 map (aspect 2) relative to a box centred at (0.25, 0.5), 0.5 high."""
    offsets = RelativePosition.offsets(torch.tensor([[0.2, 0.25, 0.3, 0.75]]), 2, 4)
    assert offsets.shape == (1, 2, 4, 2)
    expected_dx = (torch.tensor([0.125, 0.375, 0.625, 0.875]) - 0.25) * 2 / 0.5
    expected_dy = (torch.tensor([0.25, 0.75]) - 0.5) / 0.5
    assert torch.allclose(offsets[0, :, :, 0], expected_dx.expand(2, 4))
    assert torch.allclose(offsets[0, :, :, 1], expected_dy[:, None].expand(2, 4))


def test_relative_position_changes_logits_only_through_box_geometry():
    """Same actor feature, partner context fixed: moving the box shifts the logits only with the option on."""
    feats = torch.randn(1, 20, 8, 8)
    flat = torch.zeros(1, 20, 8, 8)  # uniform context: actor feature and relations identical for both boxes
    boxes = [torch.tensor([[0.1, 0.2, 0.3, 0.8], [0.6, 0.2, 0.8, 0.8]])]
    rois = RoINeck().eval()(boxes)
    with torch.no_grad():
        plain = _head()(flat + feats.mean(), rois)
        placed = _head(relative_position=True)(flat + feats.mean(), rois)
    assert torch.allclose(plain[0], plain[1], atol=1e-5)
    assert not torch.allclose(placed[0], placed[1], atol=1e-3)


def test_relative_position_is_off_by_default_so_official_keys_match():
    assert not any(k.startswith("position.") for k in _head().state_dict())
    assert {"position.fc1.weight", "position.fc1.bias", "position.fc2.weight"} <= set(
        _head(relative_position=True).state_dict())


def test_left_right_asymmetry_is_negated_by_a_mirror():
    maps = torch.randn(3, 5, 7, 7)
    asym = left_right_asymmetry(maps)
    assert asym.shape == (3, 5)
    assert torch.equal(asym, maps[..., :3].amax((2, 3)) - maps[..., 4:].amax((2, 3)))  # middle column unused
    assert torch.equal(left_right_asymmetry(maps.flip(-1)), -asym)
    assert left_right_asymmetry(torch.zeros(0, 5, 7, 7)).shape == (0, 5)


def test_position_gate_starts_as_the_plain_encoding_and_reads_the_facing():
    torch.manual_seed(0)
    plain, gated = RelativePosition(8), RelativePosition(8, facing_dim=4)
    gated.load_state_dict(plain.state_dict(), strict=False)  # the gate itself stays at zero
    boxes = torch.tensor([[0.2, 0.25, 0.3, 0.75], [0.5, 0.1, 0.7, 0.9]])
    facing = torch.randn(2, 4)
    assert torch.equal(gated(boxes, 3, 4, facing=facing), plain(boxes, 3, 4))
    torch.nn.init.normal_(gated.gate.weight)
    assert not torch.allclose(gated(boxes, 3, 4, facing=facing), gated(boxes, 3, 4, facing=-facing))
    with pytest.raises(ValueError, match="facing"):
        gated(boxes, 3, 4)
    with pytest.raises(ValueError, match="needs relative_position"):
        _head(position_gate=True)
