"""Transforms move boxes with the pixels: a bright box drawn into the frames stays under the mapped box."""
import numpy as np
import pytest
import torch

from stad.data import transforms as T

H, W = 120, 160
BOX = np.array([[0.25, 0.30, 0.55, 0.80]], np.float32)  # normalised xyxy of the painted rectangle


def painted_clip(frames: int = 3) -> np.ndarray:
    """BGR uint8 [T, H, W, 3]: black with a white rectangle at BOX, plus a red marker at the left edge."""
    clip = np.zeros((frames, H, W, 3), np.uint8)
    x1, y1, x2, y2 = (BOX[0] * [W, H, W, H]).round().astype(int)
    clip[:, y1:y2, x1:x2] = 255
    return clip


def check_alignment(recipe: T.Recipe, margin: float = 1.5) -> None:
    clip = recipe.render(painted_clip())  # [3, T, h, w], 0..1 (ToTensor only)
    box = recipe.map_boxes(BOX)[0]
    h, w = clip.shape[-2:]
    grey = clip.mean(dim=(0, 1)).numpy()
    x1, y1, x2, y2 = box * [w, h, w, h]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    inside = (xs > x1 + margin) & (xs < x2 - margin) & (ys > y1 + margin) & (ys < y2 - margin)
    outside = (xs < x1 - margin) | (xs > x2 + margin) | (ys < y1 - margin) | (ys > y2 + margin)
    assert inside.any(), "box vanished"
    assert grey[inside].min() > 0.9, "pixels under the box are not the painted ones"
    if outside.any():
        assert grey[outside].max() < 0.1, "painted pixels outside the box"


STEPS = {
    "scale": [T.ShortSideScale(64)],
    "scale_up": [T.ShortSideScale(200)],
    "exact_size": [T.ShortSideScale((100, 50))],
    "center_crop": [T.ShortSideScale(96), T.CenterCrop(80)],
    "random_crop": [T.ShortSideScale(96), T.RandomCrop((70, 90))],
    "corner_crop": [T.CornerCrop(100, "br")],
    "flip": [T.HorizontalFlip()],
    "flip_then_crop": [T.HorizontalFlip(), T.RandomCrop(100)],
    "crop_then_flip_then_scale": [T.RandomCrop(100), T.HorizontalFlip(), T.ShortSideScale(50)],
    "scale_jitter_crop": [T.ScaleJitteringRandomCrop(90, 130, 80)],
    "crop_past_border": [T.CenterCrop(140)],
    "random_scale": [T.RandomShortSideScale(60, 140)],
}


@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_stays_on_pixels(name, seed):
    recipe = T.Compose(tuple(STEPS[name])).sample(H, W, np.random.default_rng(seed))
    check_alignment(recipe)


def test_flip_mirrors_pixels_and_boxes():
    plain = T.Compose((T.ShortSideScale(60),)).sample(H, W)
    mirrored = T.Compose((T.ShortSideScale(60), T.HorizontalFlip())).sample(H, W)
    a, b = plain.render(painted_clip()), mirrored.render(painted_clip())
    assert torch.equal(a.flip(-1), b)
    np.testing.assert_allclose(mirrored.map_boxes(BOX)[0], [1 - plain.map_boxes(BOX)[0][2], plain.map_boxes(BOX)[0][1],
                                                           1 - plain.map_boxes(BOX)[0][0], plain.map_boxes(BOX)[0][3]],
                               atol=1e-6)


def test_output_shape_normalisation_and_rgb_order():
    frames = np.zeros((4, H, W, 3), np.uint8)
    frames[..., 2] = 255  # BGR red
    recipe = T.Compose((T.ShortSideScale(60), T.ToTensor(255.0), T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))).sample(H, W)
    clip = recipe.render(frames)
    assert clip.shape == (3, 4, 60, 80) and clip.dtype == torch.float32
    torch.testing.assert_close(clip[0], torch.full_like(clip[0], 2.0))  # (1 - 0.5) / 0.25
    torch.testing.assert_close(clip[1], torch.full_like(clip[1], -2.0))


def test_color_jitter_keeps_geometry_and_changes_values():
    recipe = T.Compose((T.ColorJitter(0.4, 0.4, 0.4),)).sample(H, W, np.random.default_rng(3))
    assert not recipe.color.is_identity
    check_alignment(T.Compose((T.ShortSideScale(80), T.ColorJitter(0.0, 0.3, 0.3))).sample(H, W, np.random.default_rng(1)))
    frames = np.random.default_rng(0).integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    plain = T.Compose(()).sample(H, W).render(frames)
    assert not torch.equal(recipe.render(frames), plain)
    assert recipe.map_boxes(BOX).tolist() == T.Compose(()).sample(H, W).map_boxes(BOX).tolist()


def test_reduced_decode_matches_full_decode_after_resize():
    import cv2

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (9, 9), 3)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    from stad.data.video import decode_jpeg_bytes

    recipe = T.Compose((T.ShortSideScale(112),)).sample(240, 320)
    assert recipe.geometry.decode_reduction() == 2
    full = recipe.render(decode_jpeg_bytes(jpg)[None])
    reduced = recipe.render(decode_jpeg_bytes(jpg, 2)[None])
    assert full.shape == reduced.shape
    assert (full - reduced).abs().mean() < 2.0 / 255  # documented tolerance: mean < 2 grey levels


def test_acar_spec_train_and_eval():
    spec = [("Scale", {"resize": 128}), ("RandomHorizontalFlip", {}), ("ToTensor", {"norm_value": 255.0}),
            ("Normalize", {"mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225]})]
    train, val = T.from_acar_spec(spec, train=True), T.from_acar_spec(spec, train=False)
    assert any(isinstance(s, T.RandomHorizontalFlip) for s in train.steps)
    assert not any(isinstance(s, T.RandomHorizontalFlip) for s in val.steps)
    assert val.sample(240, 320).geometry.out == (170, 128)  # ACAR Scale truncates the long side
    crop = T.from_acar_spec([("ScaleJitteringRandomCrop", {"min_scale": 100, "max_scale": 120, "size": 96})], train=False)
    assert crop.sample(240, 320).geometry.out == (96, 96)
    with pytest.raises(ValueError, match=r"spatial\[0\].*unknown transform 'Resize'"):
        T.from_acar_spec([("Resize", {})])
    with pytest.raises(ValueError, match=r"spatial\[0\] \(Scale\): bad arguments"):
        T.from_acar_spec([("Scale", {"size": 3})])


def test_tta_views():
    views = T.tta_transforms([64, 96], flip=True)
    assert len(views) == 4
    outs = [v.sample(H, W).geometry for v in views]
    assert [o.out[1] for o in outs] == [64, 64, 96, 96] and [o.flip for o in outs] == [False, True, False, True]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_per_frame_render_equals_stack_reference(name):
    """`render_frames` (resize, crop view, mirror, BGR->RGB split per distinct frame) gives exactly the
    reference: resize/pad/crop/flip the stack, then reverse channels and transpose."""
    rng = np.random.default_rng(3)
    for seed in range(4):
        recipe = T.Compose(tuple(STEPS[name]) + (T.RandomHorizontalFlip(),)).sample(H, W, np.random.default_rng(seed))
        stack = rng.integers(0, 256, (4, H, W, 3), dtype=np.uint8)
        stack[2] = stack[1]
        expected = np.ascontiguousarray(T.render_geometry(stack, recipe.geometry)[..., ::-1].transpose(3, 0, 1, 2))
        as_list = [stack[0], stack[1], stack[1], stack[3]]  # a clamped clip repeats one frame object
        assert np.array_equal(T.render_frames(stack, recipe.geometry), expected)
        assert np.array_equal(T.render_frames(as_list, recipe.geometry), expected)
        assert torch.equal(recipe.render_uint8(as_list), torch.from_numpy(expected))


def test_fused_normalisation_equals_torch_formula():
    norm = T.Normalization(255.0, (0.45, 0.4, 0.35), (0.225, 0.2, 0.25))
    scale = torch.tensor([1 / (255.0 * s) for s in norm.std]).view(3, 1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(norm.mean, norm.std)]).view(3, 1, 1, 1)
    pixels = torch.randint(0, 256, (2, 3, 4, 6, 5), dtype=torch.uint8)
    for x in (pixels, pixels[1], pixels[:, :, :, :, :3]):  # batch, one clip, strided (torch path)
        out = norm.apply(x)
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert torch.equal(out, x.float().mul_(scale).sub_(shift))
    assert torch.equal(norm.apply(pixels.float()), pixels.float().mul_(scale).sub_(shift))  # float input
