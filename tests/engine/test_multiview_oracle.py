"""End to end against ACAR-Net's evaluation path: padded batches (three aspect ratios) x four test-time
views (two scales x flip), per-box view-averaged logits.

The golden comes from tests/fixtures/manifests/oracle_scripts/dump_acar_multiview.py (AVAmulticrop +
AVAmulticropDataLoader + AVA_model(evaluate=True) of ACAR-Net @ d684203) on the JPEG frames that
`make_frames` writes; both sides decode those files themselves (ACAR-Net: PIL decode + PIL bilinear
resize; ours: OpenCV decode + cv2 resize), so their pixels differ by resampling: see TOLERANCE.
"""
import hashlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from stad.data import transforms as T
from stad.data.dataset import ClipDataset
from stad.engine import builders
from stad.engine.predictor import multiview_logits, predict_shard
from stad.models.checkpoints import filter_acar_head, filter_acar_slowfast
from stad.models.action_model import ActionDetector
from stad.models.heads import ACARHead
from stad.models.slowfast import SlowFast
from tests.engine.test_multiview import make_frames
from tests.models.models_testutils import MANIFEST_DIR, load_manifest, random_state_dict

GOLDEN = MANIFEST_DIR / "golden" / "acar_multiview_e2e.pt"
# measured max |ours - ACAR-Net| over the 5 x 3 view-averaged logits: 6.5e-3 (2.0% of the largest |logit|;
# sigmoid scores 1.6e-3), from cv2's vs PIL's bilinear resize alone (up to 3 grey levels, mean 0.7): with
# PIL's resize the difference is 1.3e-7 (second test). Without each clip's size it would be 0.17.
TOLERANCE = dict(atol=0.02, rtol=0.0)


def _model(gold):
    backbone = SlowFast((1, 1, 1, 1), **gold["slowfast_kwargs"])
    backbone.load_state_dict(filter_acar_slowfast(random_state_dict(load_manifest(gold["slowfast_manifest"]),
                                                                     seed=gold["seed_weights"])), strict=True)
    k = gold["head_kwargs"]
    head = ACARHead(k["width"], k["num_classes"], roi_size=k["roi_spatial"], reduce_dim=k["reduce_dim"],
                    hidden_dim=k["hidden_dim"], depth=k["depth"])
    weights = random_state_dict(load_manifest(gold["head_manifest"]), seed=gold["seed_weights"])
    head.load_state_dict(filter_acar_head({"state_dict": {f"module.head.module.{n}": v for n, v in weights.items()}}))
    return ActionDetector(backbone, head).eval()


def test_padded_multiview_evaluation_matches_acar_net(tmp_path):
    gold = torch.load(GOLDEN, weights_only=False)
    pkl = make_frames(tmp_path)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(tmp_path.glob("*/*.jpg")))).hexdigest()
    assert digest == gold["frames_sha256"], "the JPEG encoder wrote other bytes than the oracle saw"
    views = T.acar_views(gold["val_spatial"])
    ds = ClipDataset(pkl, frames_root=tmp_path, clip_len=gold["temporal"]["size"] // gold["temporal"]["step"],
                     frame_stride=gold["temporal"]["step"], views=views, num_classes=3)
    loader = DataLoader(ds, batch_size=3, collate_fn=builders.collate)
    batch = next(iter(loader))
    # the same padded views: shapes and ACAR's pad ratios (padded / original)
    assert [tuple(v.pixels.shape) for v in batch.views] == [tuple(s) for s in gold["view_shapes"]]
    for view, ratios in zip(batch.views, gold["pad_ratios"]):
        np.testing.assert_allclose([(1 / fw, 1 / fh) for fh, fw in view.valid_fractions], ratios, rtol=1e-12)
    model = _model(gold)
    with torch.no_grad():
        logits, kept = multiview_logits(model, batch)
    assert [k.tolist() for k in kept] == [[True, True], [], [True, True, True]]
    assert logits.shape == gold["outputs"].shape == (5, 3)
    diff = (logits - gold["outputs"]).abs().max()
    assert torch.allclose(logits, gold["outputs"], **TOLERANCE), diff
    # the whole evaluation path: one row per box, scores = sigmoid of the view-averaged logits
    shard = predict_shard(model, loader, [0, 1, 2], torch.sigmoid, torch.device("cpu"), 3)
    p = shard.predictions
    assert list(p.videos) == gold["filenames"] and p.timestamps.tolist() == [int(t) for t in gold["mid_times"]]
    np.testing.assert_allclose(p.boxes, gold["bboxes"].numpy(), atol=1e-6)
    np.testing.assert_allclose(p.scores, torch.sigmoid(gold["outputs"]).numpy(), atol=TOLERANCE["atol"] / 4)
    # padding matters at this size: without each clip's size the padded clips' logits move much further
    unpadded = torch.zeros_like(logits)
    with torch.no_grad():
        for view, keep in zip(batch.views, batch.keep):
            unpadded += model(view.clips, [b[torch.from_numpy(k)] for b, k in zip(view.boxes, keep)])
    assert (unpadded / 4 - gold["outputs"]).abs().max() > 2 * diff


def _pil_bilinear(img, size):
    """ACAR-Net's resize (PIL bilinear on RGB) of a BGR frame, in place of cv2's."""
    from PIL import Image

    if size is None or (img.shape[1], img.shape[0]) == tuple(size):
        return img
    return np.ascontiguousarray(np.asarray(Image.fromarray(img[:, :, ::-1]).resize(tuple(size), Image.BILINEAR))[:, :, ::-1])


def test_with_acars_resampler_the_logits_match_to_float_precision(tmp_path, monkeypatch):
    """JPEG decoding is bit-identical (OpenCV vs PIL, both libjpeg-turbo); with the frames resized by
    PIL's bilinear filter as ACAR-Net does, everything else (padding, per-clip context, flips, box
    mapping, view averaging) matches to float rounding."""
    gold = torch.load(GOLDEN, weights_only=False)
    monkeypatch.setattr(T, "resize_frame", _pil_bilinear)
    pkl = make_frames(tmp_path)
    ds = ClipDataset(pkl, frames_root=tmp_path, clip_len=4, frame_stride=2, views=T.acar_views(gold["val_spatial"]),
                     num_classes=3, fast_decode=False)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=builders.collate)))
    with torch.no_grad():
        logits, _ = multiview_logits(_model(gold), batch)
    assert torch.allclose(logits, gold["outputs"], atol=1e-5, rtol=1e-5), (logits - gold["outputs"]).abs().max()
