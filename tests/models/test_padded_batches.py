"""Padded batches: clips of different size padded to the batch's largest (ACAR-Net's batch_pad).

The ACAR head reads each clip's context from its own ``ceil(H * frac_h) x ceil(W * frac_w)`` cells
(ACAR-Net's ``sizes_before_padding``); tested against the official head (goldens from
tests/fixtures/manifests/oracle_scripts/dump_acar_padded.py), against our per-clip reference loop,
and against running each clip alone, unpadded.
"""
import math

import pytest
import torch

from stad.models.checkpoints import filter_acar_head
from stad.models.action_model import ActionDetector
from stad.models.fusion import TemporalPoolFusion
from stad.models.heads import ACARHead, LinearHead, acar_per_clip_reference
from stad.models.neck import RoIBatch, RoINeck
from tests.models.models_testutils import MANIFEST_DIR, load_manifest, random_state_dict

GOLDEN = MANIFEST_DIR / "golden"


def _official_head(name, gold):
    k = gold["kwargs"]
    head = ACARHead(k["width"], k["num_classes"], roi_size=k["roi_spatial"], reduce_dim=k["reduce_dim"],
                    hidden_dim=k["hidden_dim"], depth=k["depth"], mlp_1x1=k["mlp_1x1"]).eval()
    weights = random_state_dict(load_manifest(name), seed=gold["seed_weights"])
    head.load_state_dict(filter_acar_head({"state_dict": {f"module.head.module.{n}": v for n, v in weights.items()}}))
    return head


def _golden_inputs(gold):
    g = torch.Generator().manual_seed(gold["features_seed"])
    feats = [torch.randn(4, 40, 2, 8, 8, generator=g), torch.randn(4, 8, 8, 8, 8, generator=g)]
    for f, s in zip(feats, gold["features_sums"]):
        assert torch.allclose(f.sum(), s)
    sizes = [(h, w) for w, h in gold["sizes_before_padding_wh"]]  # ACAR orders them width, height
    return TemporalPoolFusion()(feats), gold["boxes"], sizes


@pytest.mark.parametrize("name", ["acar_head_tiny_depth2", "acar_head_tiny_depth1_mlp1x1"])
def test_padded_batch_matches_official_acar_head(name):
    gold = torch.load(GOLDEN / f"{name}_padded.pt", weights_only=False)
    head = _official_head(name, gold)
    fused, boxes, sizes = _golden_inputs(gold)
    rois = RoINeck().eval()(boxes, sizes=sizes)
    assert rois.context_sizes(8, 8) == [(8, 8), (8, 6), (5, 8), (6, 5)]
    with torch.no_grad():
        out = head(fused, rois)
        loop = acar_per_clip_reference(head, fused, rois)
        unpadded = head(fused, RoINeck().eval()(boxes))
    assert out.shape == gold["outputs"].shape == (7, 6)
    assert torch.allclose(out, gold["outputs"], atol=1e-5, rtol=1e-5), (out - gold["outputs"]).abs().max()
    assert torch.allclose(loop, gold["outputs"], atol=1e-5, rtol=1e-5)
    # clip 0 is not padded: same rows either way; the padded clips' rows change
    assert torch.allclose(unpadded[:3], out[:3], atol=1e-6)
    assert (unpadded[3:] - out[3:]).abs().max() > 1e-2


def _head(**kw):
    torch.manual_seed(0)
    head = ACARHead(20, 7, **{"reduce_dim": 24, "hidden_dim": 16, "depth": 2, **kw}).eval()
    if head.position is not None and head.position.gate is not None:  # zero-initialised: make it matter
        torch.nn.init.normal_(head.position.gate.weight)
    return head


# (valid height, valid width) of each clip's feature cells in a 10 x 12 padded map, boxes inside
CLIPS = [((10, 12), [[0.1, 0.1, 0.5, 0.8], [0.5, 0.2, 0.8, 0.7]]),
         ((10, 9), [[0.05, 0.1, 0.4, 0.8], [0.3, 0.3, 0.6, 0.75], [0.1, 0.05, 0.3, 0.5]]),
         ((6, 12), []),
         ((6, 12), [[0.1, 0.05, 0.5, 0.45]]),
         ((7, 8), [[0.1, 0.1, 0.4, 0.5], [0.3, 0.1, 0.55, 0.55]])]


def _padded_batch(seed=0):
    """Features [5, 20, 10, 12] with garbage in every clip's padded cells, boxes normalised to the
    padded map, fractions (h / 10, w / 12), and each clip's own map + boxes normalised to it."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(CLIPS), 20, 10, 12, generator=g) * 3
    boxes, sizes, alone = [], [], []
    for (h, w), clip_boxes in CLIPS:
        own = torch.tensor(clip_boxes, dtype=torch.float32).reshape(-1, 4)
        boxes.append(own * torch.tensor([w / 12, h / 10] * 2))
        sizes.append((h / 10, w / 12))
    for i, ((h, w), clip_boxes) in enumerate(CLIPS):
        alone.append((feats[i:i + 1, :, :h, :w].clone(), torch.tensor(clip_boxes, dtype=torch.float32).reshape(-1, 4)))
    return feats, boxes, sizes, alone


@pytest.mark.parametrize("variant", [dict(), dict(depth=1, mlp_1x1=True), dict(channels_last=False),
                                     dict(downsample="none"), dict(relative_position=True),
                                     dict(relative_position=True, position_gate=True)])
def test_padded_batch_equals_each_clip_alone_and_the_reference(variant):
    head = _head(**variant)
    feats, boxes, sizes, alone = _padded_batch()
    neck = RoINeck().eval()
    rois = neck(boxes, sizes=sizes)
    assert rois.context_sizes(10, 12) == [size for size, _ in CLIPS]
    with torch.no_grad():
        batched = head(feats, rois)
        loop = acar_per_clip_reference(head, feats, rois)
        singles = torch.cat([head(f, neck([b])) for f, b in alone])
    assert batched.shape == (sum(len(b) for _, b in CLIPS), 7)
    assert torch.allclose(batched, loop, atol=1e-5, rtol=1e-5), (batched - loop).abs().max()
    # the boxes stay > 1 cell away from the padding, so RoIAlign reads the same cells as well
    assert torch.allclose(batched, singles, atol=1e-5, rtol=1e-5), (batched - singles).abs().max()


def test_unpadded_sizes_take_the_plain_path_bit_for_bit():
    head = _head(relative_position=True)
    feats, boxes, _, _ = _padded_batch()
    with torch.no_grad():
        plain = head(feats, RoINeck()(boxes))
        full = head(feats, RoINeck()(boxes, sizes=[(1.0, 1.0)] * len(boxes)))
    assert torch.equal(plain, full)


def test_padding_values_do_not_reach_padded_clips_logits():
    head = _head(relative_position=True, position_gate=True)
    feats, boxes, sizes, _ = _padded_batch()
    rois = RoINeck()(boxes, sizes=sizes)
    other = feats.clone()
    for i, ((h, w), _) in enumerate(CLIPS):
        other[i, :, h:] = 100.0
        other[i, :, :, w:] = -50.0
    with torch.no_grad():
        assert torch.allclose(head(feats, rois), head(other, rois), atol=1e-5)


def test_empty_clips_and_all_empty_batch_with_sizes():
    head = _head()
    feats = torch.randn(3, 20, 10, 12, requires_grad=True)
    rois = RoINeck()([torch.zeros(0, 4)] * 3, reference=feats, sizes=[(1.0, 1.0), (0.5, 0.75), (0.6, 1.0)])
    out = head(feats, rois)
    assert out.shape == (0, 7)
    out.sum().backward()  # still connected (DDP)
    assert feats.grad is not None and not feats.grad.any()


@pytest.mark.parametrize("position", [dict(), dict(relative_position=True, position_gate=True)])
def test_training_gradients_with_sizes_flow_and_skip_the_padding(position):
    head = _head(relation_dropout=0.0, **position).train()
    feats, boxes, sizes, _ = _padded_batch()
    feats.requires_grad_(True)
    rois = RoINeck(jitter_scale=0.0).train()(boxes, sizes=sizes)
    head(feats, rois).square().sum().backward()
    for name, p in head.named_parameters():
        if name.endswith("gate.bias") or name.endswith("gate.weight"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for i, ((h, w), clip_boxes) in enumerate(CLIPS):
        grad = feats.grad[i]
        if clip_boxes:
            assert grad[:, :h, :w].abs().sum() > 0
        assert not grad[:, h:].any() and not grad[:, :, w:].any()  # padded cells feed nothing
    # the batched path's gradients equal the reference loop's
    head.zero_grad()
    f2 = feats.detach().clone().requires_grad_(True)
    acar_per_clip_reference(head, f2, rois).square().sum().backward()
    assert torch.allclose(f2.grad, feats.grad, atol=1e-5)


def test_linear_head_ignores_sizes_like_the_official_one():
    torch.manual_seed(0)
    head = LinearHead(20, 7).eval()
    feats, boxes, sizes, _ = _padded_batch()
    with torch.no_grad():
        assert torch.equal(head(feats, RoINeck()(boxes, sizes=sizes)), head(feats, RoINeck()(boxes)))


def test_neck_sizes_validation_and_selection():
    neck = RoINeck()
    boxes = [torch.rand(2, 4), torch.zeros(0, 4), torch.rand(3, 4)]
    with pytest.raises(ValueError, match="entries"):
        neck(boxes, sizes=[(1.0, 1.0)])
    with pytest.raises(ValueError, match="fractions"):
        neck(boxes, sizes=[(1.0, 1.0), (0.0, 1.0), (1.0, 1.2)])
    rois = neck(boxes, sizes=torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.75, 0.25]]))
    assert rois.sizes == ((1.0, 1.0), (0.5, 0.5), (0.75, 0.25))
    assert rois.context_sizes(8, 8) == [(8, 8), (4, 4), (6, 2)]
    assert RoIBatch(rois.rois, rois.counts).context_sizes(8, 8) == [(8, 8)] * 3
    sub, rows = rois.select_clips([2])
    assert sub.counts == (3,) and rows.tolist() == [2, 3, 4] and sub.sizes == ((0.75, 0.25),)
    assert (sub.rois[:, 0] == 0).all() and torch.equal(sub.rois[:, 1:], rois.rois[2:, 1:])
    # ACAR's arithmetic: a fraction of 1 / (64 / 48) may round above 0.75
    frac = 1.0 / (64 / 48)
    assert neck(boxes[:1], sizes=[(frac, 1.0)]).context_sizes(8, 8) == [(math.ceil(8 * frac), 8)]


def test_too_small_context_is_a_clear_error():
    head = _head()
    feats, boxes, _, _ = _padded_batch()
    rois = RoINeck()(boxes, sizes=[(1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (0.2, 1.0), (1.0, 1.0)])
    with pytest.raises(ValueError, match="at least 3x3"):
        head(feats, rois)


class _Backbone(torch.nn.Module):
    """Shift-invariant (a 1x1 conv on 4x4-pooled pixels): a padded clip's valid cells equal its own."""

    out_channels = (20,)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 20, 1)

    def forward(self, clips):
        return [self.conv(torch.nn.functional.avg_pool3d(clips, (1, 4, 4)))]


def test_detector_padded_batch_equals_clips_alone():
    torch.manual_seed(0)
    model = ActionDetector(_Backbone(), _head(relative_position=True)).eval()
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(3, 2, 40, 48, generator=g), torch.randn(3, 2, 40, 36, generator=g),
             torch.randn(3, 2, 24, 48, generator=g)]
    own = [torch.tensor([[0.1, 0.1, 0.5, 0.8]]), torch.tensor([[0.2, 0.1, 0.6, 0.7], [0.05, 0.3, 0.3, 0.8]]),
           torch.tensor([[0.3, 0.1, 0.6, 0.5]])]
    padded = torch.zeros(3, 3, 2, 40, 48)
    boxes, sizes = [], []
    for i, (c, b) in enumerate(zip(clips, own)):
        h, w = c.shape[-2:]
        padded[i, ..., :h, :w] = c
        boxes.append(b * torch.tensor([w / 48, h / 40] * 2))
        sizes.append((1.0 / (40 / h), 1.0 / (48 / w)))
    with torch.no_grad():
        batched = model(padded, boxes, sizes=sizes)
        alone = torch.cat([model(c[None], [b]) for c, b in zip(clips, own)])
        ignored = model(padded, boxes)
    assert torch.allclose(batched, alone, atol=1e-5), (batched - alone).abs().max()
    assert (ignored[1:] - alone[1:]).abs().max() > 1e-3  # without sizes the padding is context
