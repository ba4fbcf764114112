"""collate_clips on clips of different size: ACAR-Net's batch_pad (normalise, then pad with 0)."""
import pickle

import torch

from stad.data.collate import ClipBatch, collate_clips
from stad.data.dataset import ClipSample
from stad.data.transforms import Normalization

NORM = Normalization(255.0, (0.45, 0.40, 0.35), (0.225, 0.25, 0.2))


def _sample(h, w, n_boxes=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (3, 2, h, w), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[0.1, 0.2, 0.9, 0.8]] * n_boxes).reshape(-1, 4)
    return ClipSample(pixels, boxes, torch.zeros(n_boxes, 3), torch.ones(n_boxes), ("v", h * 100 + w),
                      torch.full((n_boxes,), -1), (h, w), boxes.clone(), NORM)


def test_padded_region_is_zero_after_normalisation_and_sizes_are_kept():
    samples = [_sample(8, 12, 2, 0), _sample(6, 12, 0, 1), _sample(8, 9, 1, 2), _sample(5, 7, 1, 3)]
    batch = collate_clips(samples)
    assert batch.pixels.dtype == torch.uint8 and batch.pixels.shape == (4, 3, 2, 8, 12)  # uint8 transport
    assert batch.sizes == [(8, 12), (6, 12), (8, 9), (5, 7)]
    clips = batch.clips
    for i, s in enumerate(samples):
        h, w = s.pixels.shape[-2:]
        torch.testing.assert_close(clips[i, ..., :h, :w], NORM.apply(s.pixels), rtol=0, atol=1e-6)
        assert not clips[i, ..., h:, :].any() and not clips[i, ..., :, w:].any()
    # before this change the padded pixels were black (0 before normalisation): -mean / std, not 0
    assert NORM.apply(batch.pixels)[1, :, :, 6:].abs().min() > 1.0
    assert batch.valid_fractions == [(1.0, 1.0), (1.0 / (8 / 6), 1.0), (1.0, 1.0 / (12 / 9)), (1.0 / (8 / 5), 1.0 / (12 / 7))]
    # boxes stay normalised to the padded tensor
    torch.testing.assert_close(batch.boxes[3], torch.tensor([[0.1 * 7 / 12, 0.2 * 5 / 8, 0.9 * 7 / 12, 0.8 * 5 / 8]]))
    assert batch.boxes[1].shape == (0, 4)


def test_equal_sizes_need_no_fractions_and_clips_are_unchanged():
    samples = [_sample(8, 12, 1, 0), _sample(8, 12, 2, 1)]
    batch = collate_clips(samples)
    assert batch.sizes == [(8, 12), (8, 12)] and batch.valid_fractions is None
    assert torch.equal(batch.clips, NORM.apply(batch.pixels))
    assert ClipBatch(batch.pixels, batch.boxes, batch.targets, batch.box_scores, batch.keys, batch.person_ids,
                     batch.orig_boxes, batch.orig_sizes, NORM).valid_fractions is None  # built without sizes


def test_sizes_survive_pickling_and_moves():
    batch = collate_clips([_sample(8, 12, 1, 0), _sample(6, 10, 1, 1)])
    for other in (pickle.loads(pickle.dumps(batch)), batch.to("cpu")):
        assert other.sizes == batch.sizes and other.valid_fractions == batch.valid_fractions
        assert torch.equal(other.clips, batch.clips)


def test_float_pixels_without_normalisation_are_zero_padded():
    a = ClipSample(torch.full((3, 2, 4, 6), 2.0), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), ("v", 1),
                   torch.zeros(0, dtype=torch.long), (4, 6), torch.zeros(0, 4))
    b = ClipSample(torch.full((3, 2, 3, 4), 3.0), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), ("v", 2),
                   torch.zeros(0, dtype=torch.long), (3, 4), torch.zeros(0, 4))
    batch = collate_clips([a, b])
    assert batch.valid_fractions == [(1.0, 1.0), (0.75, 1.0 / 1.5)]
    assert batch.clips[1, ..., :3, :4].eq(3).all() and batch.clips[1].sum() == 3 * 2 * 3 * 4 * 3


class _Recorder(torch.nn.Module):
    """A two-argument model (no ``sizes``) unless ``accepts_sizes``; records what it gets."""

    def __init__(self, accepts_sizes):
        super().__init__()
        self.accepts_sizes, self.seen = accepts_sizes, []
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, clips, boxes, **kw):
        if kw and not self.accepts_sizes:
            raise TypeError("unexpected sizes")
        self.seen.append(kw.get("sizes"))
        return torch.cat([b.sum(1, keepdim=True) * self.w * clips[i].mean() for i, b in enumerate(boxes)])


def test_engine_passes_sizes_only_for_padded_batches():
    from stad.engine.predictor import forward_batch

    padded = collate_clips([_sample(8, 12, 2, 0), _sample(6, 10, 1, 1)])
    equal = collate_clips([_sample(8, 12, 2, 0), _sample(8, 12, 1, 1)])
    model = _Recorder(accepts_sizes=True)
    assert forward_batch(model, padded).shape == (3, 3)
    assert model.seen[-1] == padded.valid_fractions and model.seen[-1][1] == (0.75, 1.0 / 1.2)
    old = _Recorder(accepts_sizes=False)  # a model written for the two-argument call still works unpadded
    assert forward_batch(old, equal).shape == (3, 3) and old.seen == [None]


def test_trainer_step_on_a_padded_batch_uses_sizes_and_backpropagates():
    from stad.config import SchedulerConfig
    from stad.engine.distributed import DistContext
    from stad.engine.optim import WarmupLRSchedule
    from stad.engine.trainer import Trainer

    model = _Recorder(accepts_sizes=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(DistContext(), model, torch.nn.BCEWithLogitsLoss(), opt,
                      WarmupLRSchedule(opt, SchedulerConfig(type="constant", base_lr=0.1), 1, 10),
                      torch.amp.GradScaler("cpu", enabled=False), freeze_bn=False)
    batch = collate_clips([_sample(8, 12, 2, 0), _sample(6, 10, 1, 1)])
    before = model.w.detach().clone()
    assert trainer.step([batch], 0) is not None
    assert model.seen == [batch.valid_fractions] and not torch.equal(model.w.detach(), before)
