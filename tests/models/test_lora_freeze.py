import pytest
import torch

from stad.models import build_action_model, create_model
from stad.models.freeze import param_groups, set_trainable
from stad.models.lora import LoRALinear, apply_lora, lora_parameters, merge_lora


def _detector():
    torch.manual_seed(0)
    return build_action_model("vitsf", "acar", 4, vit="vit_tiny", slowfast="slowfast_tiny",
                              head_kwargs=dict(reduce_dim=32, hidden_dim=16, depth=1))


def test_lora_starts_as_identity_update_and_merges():
    vit = create_model("vit_tiny").eval()
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        before = vit(clip)[0]
    names = apply_lora(vit, rank=4)
    assert len(names) == 2 * len(vit.blocks) and isinstance(vit.blocks[0].attn.qkv, LoRALinear)
    with torch.no_grad():
        assert torch.allclose(vit(clip)[0], before, atol=1e-6)  # B starts at zero
        for p in lora_parameters(vit):
            if p.shape[1] == 4:  # lora_b
                p.normal_(std=0.05)
        adapted = vit(clip)[0]
    assert not torch.allclose(adapted, before, atol=1e-4)
    assert "blocks.0.attn.qkv.lora_a" in vit.state_dict() and "blocks.0.attn.qkv.weight" in vit.state_dict()
    assert merge_lora(vit) == len(names)
    with torch.no_grad():
        assert torch.allclose(vit(clip)[0], adapted, atol=1e-4, rtol=1e-4)
    assert not any("lora" in k for k in vit.state_dict())


def test_lora_mode_trains_only_adapters_and_head():
    model = _detector()
    apply_lora(model.backbone.vit, rank=2)
    trainable = set_trainable(model, "lora")
    assert trainable and all(n.startswith("head.") or "lora_" in n for n in trainable)
    model.train()
    model(torch.randn(2, 3, 8, 48, 48), [torch.tensor([[0.1, 0.1, 0.6, 0.6]])] * 2).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_linear_probe_and_partial():
    model = _detector()
    probe = set_trainable(model, "linear_probe")
    assert probe and all(n.startswith("head.") for n in probe)
    partial = set(set_trainable(model, "partial", last_blocks=1))
    assert "backbone.vit.blocks.1.attn.qkv.weight" in partial and "backbone.vit.norm.weight" in partial
    assert "backbone.vit.blocks.0.attn.qkv.weight" not in partial
    assert "backbone.slowfast.slow_res4.0.conv1.weight" in partial and "backbone.slowfast.Tconv4.0.weight" in partial
    assert "backbone.slowfast.slow_res3.0.conv1.weight" not in partial
    assert "backbone.vit.patch_embed.proj.weight" not in partial
    assert len(set_trainable(model, "full")) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown freezing mode"):
        set_trainable(model, "half")


def test_param_groups_cover_trainable_params_once():
    model = _detector()
    set_trainable(model, "partial", last_blocks=2)
    groups = param_groups(model, lr=0.1, weight_decay=1e-4, backbone_lr_scale=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone_decay"]["lr"] == pytest.approx(0.01) and by_name["head_decay"]["lr"] == 0.1
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    torch.optim.SGD(groups, lr=0.1)


def test_vit_layer_decay_scales_lr_per_block():
    model = _detector()  # vit_tiny has 2 blocks -> layers 0 (embed), 1, 2, 3 (final norm)
    groups = param_groups(model, lr=1.0, vit_layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    vit = model.backbone.vit
    assert lr_of[id(vit.patch_embed.proj.weight)] == pytest.approx(0.5 ** 3)
    assert lr_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.5 ** 2)
    assert lr_of[id(vit.blocks[1].mlp.fc1.weight)] == pytest.approx(0.5)
    assert lr_of[id(vit.norm.weight)] == pytest.approx(1.0)
    assert lr_of[id(model.backbone.slowfast.slow_conv1.weight)] == 1.0 and lr_of[id(model.head.fc2.weight)] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
