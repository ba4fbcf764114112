import pytest
import torch

from stad.models import create_model, list_models
from stad.models.vit import VIT_SIZES, VisionTransformer3D, resample_pos_embed, sincos_table


def test_tiny_feature_map_shape():
    model = create_model("vit_tiny").eval()
    with torch.no_grad():
        clip = torch.randn(2, 3, 8, 112, 112)
        (fmap,) = model(clip)
        assert torch.equal(model.forward_features(clip), fmap)
    assert fmap.shape == (2, 64, 4, 7, 7)


def test_other_input_sizes_resample_pos_embed():
    model = create_model("vit_tiny").eval()
    with torch.no_grad():
        (fmap,) = model(torch.randn(1, 3, 16, 160, 128))
    assert fmap.shape == (1, 64, 8, 10, 8)
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 3, 8, 100, 112))


def test_resample_identity_and_linear_time():
    pos = torch.randn(1, 2 * 3 * 3, 8)
    assert resample_pos_embed(pos, (2, 3, 3), (2, 3, 3)) is pos
    up = resample_pos_embed(pos, (2, 3, 3), (4, 3, 3)).view(4, 3, 3, 8)
    grid = pos.view(2, 3, 3, 8)
    # linear (align_corners=False) upsampling 2 -> 4: first/last equal the ends, middle mixes
    assert torch.allclose(up[0], grid[0]) and torch.allclose(up[3], grid[1])
    assert torch.allclose(up[1], 0.75 * grid[0] + 0.25 * grid[1], atol=1e-6)


def test_sincos_table_values():
    table = sincos_table(5, 6)[0]
    assert torch.allclose(table[:, 0], torch.sin(torch.arange(5.0)))
    assert torch.allclose(table[:, 1], torch.cos(torch.arange(5.0)))
    assert torch.allclose(table[3, 2], torch.sin(torch.tensor(3.0) / 10000 ** (2 / 6)))


def test_learned_pos_embed_gets_gradients_and_sincos_is_not_in_state_dict():
    fixed = create_model("vit_tiny")
    assert "pos_embed" not in fixed.state_dict()
    learned = create_model("vit_tiny", learned_pos_embed=True)
    (fmap,) = learned(torch.randn(1, 3, 8, 64, 64))
    fmap.sum().backward()
    assert learned.pos_embed.grad is not None and learned.pos_embed.grad.abs().sum() > 0


def test_gradient_checkpointing_same_values_and_grads():
    torch.manual_seed(0)
    a = create_model("vit_tiny", drop_path_rate=0.0)
    b = create_model("vit_tiny", grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    clip = torch.randn(1, 3, 8, 64, 64)
    outs = []
    for m in (a, b):
        m.train()
        m(clip)[0].square().sum().backward()
        outs.append(m.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)


def test_attention_matches_explicit_softmax():
    model = create_model("vit_tiny").eval()
    attn = model.blocks[0].attn
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        qkv = x @ attn.qkv.weight.T + torch.cat([attn.q_bias, torch.zeros(64), attn.v_bias])
        q, k, v = qkv.view(2, 10, 3, 4, 16).permute(2, 0, 3, 1, 4)
        ref = ((q @ k.transpose(-1, -2)) / 4.0).softmax(-1) @ v
        ref = attn.proj(ref.transpose(1, 2).reshape(2, 10, 64))
        assert torch.allclose(attn(x), ref, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in VIT_SIZES if n != "vit_tiny"])
def test_official_sizes_on_meta(name):
    dim, depth, heads, ratio, patch = VIT_SIZES[name]
    with torch.device("meta"):
        model = create_model(name)
    assert len(model.blocks) == depth and model.embed_dim == dim
    assert model.blocks[0].mlp.fc1.out_features == int(dim * ratio)
    assert model.patch_embed.proj.kernel_size == (2, patch, patch)
    assert name in list_models("backbone")


def test_giant_matches_videomaev2_dimensions():
    with torch.device("meta"):
        model = create_model("vit_giant")
    assert (model.embed_dim, len(model.blocks), model.blocks[0].mlp.fc1.out_features) == (1408, 40, 6144)
    assert model.grid == (8, 16, 16)
    assert isinstance(model, VisionTransformer3D)
