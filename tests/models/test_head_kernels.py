"""Winograd F(2x2, 3x3) convolutions of the ACAR head (stad.models.heads.kernels): the same linear map
as F.conv2d (float64 to 1e-10, gradients too), used only above the channel threshold, chunking and
the filter cache change nothing, and a head forced onto the Winograd path still matches ACAR-Net's
goldens and the per-clip reference loop. Tiny shapes only; nothing here measures time."""
import copy

import pytest
import torch
import torch.nn.functional as F

import stad.models.heads.kernels as kernels
from stad.models.heads import ACARHead, acar_per_clip_reference
from stad.models.heads.kernels import FilterCache, conv3x3
from stad.models.neck import RoINeck
from tests.models.test_golden_oracle import (TOL, _acar_kwargs, _golden, _head_inputs, filter_acar_head,
                                              load_manifest, random_state_dict)


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Send every 3x3 convolution through Winograd, whatever its channel count."""
    monkeypatch.setattr(kernels, "WINOGRAD_MIN_CHANNELS", 1)


@pytest.mark.parametrize("shape, padding", [((3, 5, 7, 7), 1), ((2, 4, 16, 16), 0), ((1, 3, 3, 3), 0),
                                            ((2, 6, 5, 8), 1), ((4, 2, 6, 9), 0), ((1, 3, 3, 4), 1)])
def test_winograd_is_the_same_linear_map_as_conv2d(shape, padding, winograd_everywhere):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    weights = [torch.randn(c, shape[1], 3, 3, dtype=torch.float64) for c in (4, 3, 5)]
    for layout in (torch.contiguous_format, torch.channels_last):
        outs = conv3x3(x.contiguous(memory_format=layout), weights, padding)
        for out, w in zip(outs, weights):
            assert torch.allclose(out, F.conv2d(x, w, padding=padding), atol=1e-10)
    x32, w32 = x.float(), [w.float() for w in weights]
    for out, w in zip(conv3x3(x32, w32, padding), w32):
        assert torch.allclose(out, F.conv2d(x32, w, padding=padding), atol=1e-5, rtol=1e-5)


def test_winograd_gradients_equal_conv2d_gradients(winograd_everywhere):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(c, 4, 3, 3, dtype=torch.float64, requires_grad=True) for c in (5, 2)]
    grads = []
    for conv in (lambda: conv3x3(x, weights, 1),
                 lambda: [F.conv2d(x, w, padding=1) for w in weights]):
        loss = sum((out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).cos()).sum() for out in conv())
        grads.append(torch.autograd.grad(loss, [x, *weights]))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_chunks_of_boxes_give_the_same_result(winograd_everywhere, monkeypatch):
    torch.manual_seed(2)
    x, w = torch.randn(7, 4, 7, 7, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64)
    whole = conv3x3(x, [w], 1)[0]
    monkeypatch.setattr(kernels, "WINOGRAD_CHUNK_BYTES", 1)  # one box per chunk
    assert torch.allclose(conv3x3(x, [w], 1)[0], whole, atol=1e-12)


def test_only_large_3x3_convolutions_take_the_winograd_path(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "winograd_tiles", lambda *a: calls.append(a) or pytest.fail("not Winograd"))
    x = torch.randn(2, 16, 6, 6)
    w3, w1 = torch.randn(16, 16, 3, 3), torch.randn(16, 16, 1, 1)
    assert torch.equal(conv3x3(x, [w3], 1)[0], F.conv2d(x, w3, padding=1))  # below the threshold: bit for bit
    assert torch.equal(conv3x3(x, [w1], 0)[0], F.conv2d(x, w1))  # not 3x3
    assert not calls
    monkeypatch.setattr(kernels, "WINOGRAD_MIN_CHANNELS", 16)
    with pytest.raises(pytest.fail.Exception):
        conv3x3(x, [w3], 1)
    big = torch.randn(1, kernels.WINOGRAD_MIN_CHANNELS, 4, 4)
    assert kernels.use_winograd(big, torch.randn(kernels.WINOGRAD_MIN_CHANNELS, big.shape[1], 3, 3))


def test_filter_cache_is_reused_until_a_weight_changes():
    cache = FilterCache()
    w = torch.nn.Parameter(torch.randn(3, 2, 3, 3))
    with torch.no_grad():
        first = cache.filters([w])
        assert cache.filters([w]) is first
        w.add_(1.0)  # in place (an optimizer step, load_state_dict): version changes
        second = cache.filters([w])
        assert second is not first and torch.allclose(second, kernels.winograd_filters(w))
        other = torch.nn.Parameter(w.detach().clone())  # a replaced parameter, equal values
        assert cache.filters([other]) is not second
    with torch.inference_mode():
        inference = cache.filters([w])
    assert not inference.is_inference()  # usable afterwards outside inference mode
    assert cache.filters([w]).requires_grad  # autograd recording: fresh filters with a graph
    assert copy.deepcopy(cache)._filters is None


def _forced_winograd_head(name):
    gold = _golden(name)
    k = gold["kwargs"]
    head = ACARHead(k["width"], k["num_classes"], **_acar_kwargs(k)).eval()
    weights = random_state_dict(load_manifest(name), seed=gold["seed_weights"])
    head.load_state_dict(filter_acar_head({"state_dict": {f"module.head.module.{n}": v for n, v in weights.items()}}),
                         strict=True)  # the filter caches are not in the state dict
    return head, gold


@pytest.mark.parametrize("name", ["acar_head_tiny_depth2", "acar_head_tiny_depth1_mlp1x1"])
def test_winograd_head_matches_the_official_goldens(name, winograd_everywhere, monkeypatch):
    calls = []
    original = kernels.winograd_tiles
    monkeypatch.setattr(kernels, "winograd_tiles", lambda *a: calls.append(1) or original(*a))
    head, gold = _forced_winograd_head(name)
    fused, rois = _head_inputs(gold)
    with torch.no_grad():
        out, again = head(fused, rois), head(fused, rois)  # the second call reads the cached filters
    assert calls  # the Winograd path ran
    assert torch.allclose(out, gold["outputs"], **TOL), (out - gold["outputs"]).abs().max()
    assert torch.equal(out, again)


@pytest.mark.parametrize("train", [False, True])
def test_winograd_head_equals_the_reference_loop_with_gradients(train, winograd_everywhere):
    torch.manual_seed(0)
    head = ACARHead(20, 7, reduce_dim=24, hidden_dim=16, depth=2, relation_dropout=0.0).train(train)
    feats = torch.randn(4, 20, 9, 9, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    boxes = [torch.cat([xy, xy + 0.3], 1) for xy in (torch.rand(n, 2, generator=gen) * 0.6 for n in (2, 0, 1, 3))]
    rois = RoINeck().eval()(boxes)
    results = []
    for fn in (head, lambda f, r: acar_per_clip_reference(head, f, r),
               lambda f, r: acar_per_clip_reference(head, f, r, fast_kernels=True)):
        head.zero_grad()
        feats.grad = None
        out = fn(feats, rois)
        (out ** 2).sum().backward()
        results.append([out.detach(), feats.grad.clone()] + [p.grad.clone() for p in head.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
