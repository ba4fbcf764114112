"""Every shipped config that claims a published one has the published values, as they run.

Each published file has a fixture in tests/fixtures/published_configs/ (values + repository, commit and
path, written by make_fixtures.py there). ``our_values`` (tests/configs/published.py) resolves one of our
configs through the config layer and the engine's builders and reads the values back from the built
model, transform pipeline and loss. Every published value must equal ours, except the deviations declared
below (key, published value, ours, reason): a deviation must be exactly as declared, so drift on either
side fails. Every config under configs/ is either mapped to a published fixture here or declared our own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from stad.config import load_config
from stad.engine import builders
from tests.configs.published import ROOT, load_fixture, multisports_convention_values, our_values

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")


@dataclass(frozen=True)
class Deviation:
    published: object
    ours: object
    reason: str


@dataclass(frozen=True)
class Parity:
    fixture: str
    deviations: dict[str, Deviation] = field(default_factory=dict)
    # True: the fixture lists the full ACAR-Net value set and ours must have exactly its keys;
    # False: only the fixture's keys are compared (a different framework, e.g. mmaction2)
    same_keys: bool = True


CW_RELEASED = Deviation("SFR50_VITG_ACAR_CWtrain_ckpt_12.pth.tar", "SFR50_VITG_ACAR_CWtrain_ckpt_11.pth.tar",
                        "the reference's YAML names ckpt_12, but the file it released (checkpoints/README.md, "
                        "26.62 val mAP) is ckpt_11")
CW_SIGMOID = Deviation(True, False, "CW's classes 1..13 are not AVA's 13 mutually exclusive poses; the "
                                    "published-name config keeps the pose softmax for the released checkpoint")
CW_CAP_STEP = Deviation({"range": [50, 2200, 1]}, {"range": [50, 2200, 50]},
                        "a 43-point sweep instead of 2150 evaluations; the best-of-sweep is tuned on the "
                        "evaluated set either way (set cap_step: 1 to sweep as the reference)")

_MS_MODEL = "ours is SlowFast-R50 + ACAR HR2O (the project's model), not the tutorial's SlowOnly-R50 + linear RoI head"
_MS_NORM = "Kinetics SlowFast weights (ACAR-Net's SLOWFAST_R50_K400) expect /255, mean 0.45, std 0.225; the " \
           "tutorial's ImageNet statistics belong to its SlowOnly weights"
_MS_TEMPORAL = "same 64-frame window, sampled as the SlowFast input (32 frames, step 2) instead of SlowOnly's 4 x 16"
_MS_SCHEDULE = "our schedule for SlowFast + ACAR at batch 2 x 4 processes (not tuned upstream); the tutorial " \
               "fine-tunes from a model already trained on the full MultiSports"
_MS_DEVIATIONS = {
    "backbone.arch": Deviation("ResNet3dSlowOnly depth 50 (Kinetics-400 4x16 weights)", "slowfast50", _MS_MODEL),
    "head.type": Deviation("BBoxHeadAVA (RoIAlign 8x8 + temporal pool, linear, dropout 0.5)", "acar", _MS_MODEL),
    "neck.multi_class": Deviation(False, True, "multi-label sigmoid BCE like every ACAR model here; a box has one "
                                               "MultiSports label, which a sigmoid head can still score"),
    **{f"{s}.{k}": Deviation(p, o, _MS_NORM) for s in ("train", "val")
       for k, p, o in (("norm_value", 1.0, 255.0), ("mean", [123.675, 116.28, 103.53], [0.45, 0.45, 0.45]),
                       ("std", [58.395, 57.12, 57.375], [0.225, 0.225, 0.225]))},
    **{f"{s}.temporal.{k}": Deviation(p, o, _MS_TEMPORAL) for s in ("train", "val")
       for k, p, o in (("frames", 4, 32), ("step", 16, 2))},
    "train.scale": Deviation("RandomRescale(256, 320) + RandomCrop(256)", 256,
                             "ACAR-Net's training augmentation (short side 256 + flip), as for AVA"),
    "val.batch_size": Deviation(1, 2, "throughput only: clips are scored independently"),
    "train.optimizer.weight_decay": Deviation(1e-05, 1e-07, _MS_SCHEDULE + " (ACAR-Net's weight decay)"),
    "train.grad_clip": Deviation(5.0, 10.0, _MS_SCHEDULE),
    "train.scheduler.base_lr": Deviation(0.001, 0.004, _MS_SCHEDULE),
    "train.scheduler.warmup_lr": Deviation(0.01, 0.032, _MS_SCHEDULE),
    "train.scheduler.warmup_epochs": Deviation(5, 1.0, _MS_SCHEDULE),
    "train.scheduler.milestone_epochs": Deviation([6, 7], [6.0, 7.5], _MS_SCHEDULE),
    "eval.metric": Deviation("MultiSportsMetric: frameAP@0.5 over 60 classes (6 not evaluated), arg-max label per "
                             "box; video-mAP@0.2/0.5",
                             "AVA frame-mAP@0.5 (ActivityNet get_ava_performance), every class of the label map",
                             "the project's evaluator (capacity sweep, every labelled class); MultiSports' "
                             "video-mAP needs linked tubes, which the project does not compute"),
    "eval.groundtruth": Deviation("multisports_GT.pkl", "multisports_val.csv",
                                  "the same GT as an AVA-style CSV (stad.data.convert multisports)"),
}

SHIPPED: dict[str, Parity] = {
    "configs/ava/SLOWFAST_R50_ACAR_HR2O.yaml": Parity("acar_ava_SLOWFAST_R50_ACAR_HR2O"),
    "configs/ava/eval_SLOWFAST_R50_ACAR_HR2O.yaml": Parity("acar_ava_eval_SLOWFAST_R50_ACAR_HR2O"),
    "configs/ava/SLOWFAST_R50_baseline.yaml": Parity("acar_ava_SLOWFAST_R50_baseline"),
    "configs/ava/SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml": Parity("acar_ava_SLOWFAST_R101_ACAR_HR2O_DEPTH1"),
    "configs/ava/eval_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml": Parity("acar_ava_eval_SLOWFAST_R101_ACAR_HR2O_DEPTH1"),
    "configs/ava_kinetics/evalAVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml":
        Parity("acar_avakinetics_evalAVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1"),
    # the CW model side (ViT adapter, [slow, fast, vit] on the slow grid, no final ViT norm) has no deviation:
    # model.kwargs.fusion: cw_reference + sub_kwargs.final_norm: False; test_config_builds_the_official_layout
    # loads the released file's key layout into each of them
    "configs/chaotic_world/VITSF_ACAR_HR2O_CW_train.yaml": Parity("cw_VITSF_ACAR_HR2O_CW_train"),
    "configs/chaotic_world/VITSF_ACAR_HR2O_CW_train_resume.yaml":
        Parity("cw_VITSF_ACAR_HR2O_CW_train_resume", {"weights": CW_RELEASED}),
    "configs/chaotic_world/eval_VITSF_ACAR_HR2O_CW.yaml":
        Parity("cw_eval_VITSF_ACAR_HR2O_CW", {"weights": CW_RELEASED}),
    "configs/chaotic_world/VITSF_ACAR_HR2O_CW_train_sigmoid.yaml": Parity("cw_VITSF_ACAR_HR2O_CW_train", {
        "loss.pose_softmax": CW_SIGMOID, "eval.capacities": CW_CAP_STEP}),
    "configs/chaotic_world/eval_VITSF_ACAR_HR2O_CW_sigmoid.yaml": Parity("cw_eval_VITSF_ACAR_HR2O_CW", {
        "loss.pose_softmax": CW_SIGMOID, "eval.capacities": CW_CAP_STEP,
        "weights": Deviation("SFR50_VITG_ACAR_CWtrain_ckpt_12.pth.tar", "last.pth",
                             "evaluates a model trained with VITSF_ACAR_HR2O_CW_train_sigmoid.yaml")}),
    "configs/multisports/SLOWFAST_R50_ACAR_HR2O_MS.yaml":
        Parity("mmaction2_multisports_slowonly_tutorial", _MS_DEVIATIONS, same_keys=False),
}

# Configs with no published counterpart, and why.
OURS = {
    "configs/toy/demo_acar.yaml": "toy actors demo (make demo): tiny dual-stream ACAR model trained from scratch",
    "configs/toy/demo_linear.yaml": "toy actors demo: linear-head probe on the demo model's frozen backbone",
    "configs/toy/vitsf_acar_train.yaml": "toy actors: tiny ViT + SlowFast -> ACAR, CPU training",
    "configs/toy/vitsf_acar_eval_gt.yaml": "toy actors: evaluation with GT boxes",
    "configs/toy/vitsf_acar_eval_proposals.yaml": "toy actors: evaluation with detector proposals",
    "configs/toy/recognition_finetune.yaml": "toy actors recognition clips: full fine-tuning of a tiny SlowFast",
    "configs/toy/recognition_probe.yaml": "toy actors recognition clips: linear probe on cached frozen features",
}

# Official model layouts (tests/fixtures/manifests) the configs must build exactly: ACAR-Net's model zoo for
# the AVA configs, the CW reference's released checkpoint for every Chaotic World config (one model for all).
CW_MANIFEST = "cw_reference_vitsf"
MANIFESTS = {
    **{f"configs/chaotic_world/{name}.yaml": CW_MANIFEST
       for name in ("eval_VITSF_ACAR_HR2O_CW", "VITSF_ACAR_HR2O_CW_train", "VITSF_ACAR_HR2O_CW_train_resume",
                    "eval_VITSF_ACAR_HR2O_CW_sigmoid", "VITSF_ACAR_HR2O_CW_train_sigmoid")},
    "configs/ava/SLOWFAST_R50_ACAR_HR2O.yaml": "acar_ava_slowfast_r50_hr2o",
    "configs/ava/eval_SLOWFAST_R50_ACAR_HR2O.yaml": "acar_ava_slowfast_r50_hr2o",
    "configs/ava/SLOWFAST_R50_baseline.yaml": "acar_ava_slowfast_r50_linear",
    "configs/ava/SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml": "acar_ava_slowfast_r101_hr2o_depth1",
    "configs/ava/eval_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml": "acar_ava_slowfast_r101_hr2o_depth1",
    "configs/ava_kinetics/evalAVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml": "acar_ava_slowfast_r101_hr2o_depth1",
}


def same(a: object, b: object) -> bool:
    """Equal values; a bool only equals a bool (``True == 1`` in Python), 6 equals 6.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) in (int, float) and type(b) in (int, float):
        return a == b
    return type(a) is type(b) and a == b


def compare(ours: dict, published: dict, parity: Parity) -> list[str]:
    """Every difference that is not exactly a declared deviation, as readable lines."""
    problems = []
    for key, dev in parity.deviations.items():
        if key not in published:
            problems.append(f"{key}: declared as a deviation but the published fixture has no such value")
        elif not same(published[key], dev.published):
            problems.append(f"{key}: published value is {published[key]!r}, the declaration says {dev.published!r}")
        if not same(ours.get(key, "<missing>"), dev.ours):
            problems.append(f"{key}: ours is {ours.get(key, '<missing>')!r}, the declaration says {dev.ours!r}")
    for key, value in published.items():
        if key in parity.deviations:
            continue
        if key not in ours:
            problems.append(f"{key}: published {value!r}, not computed for ours")
        elif not same(ours[key], value):
            problems.append(f"{key}: published {value!r}, ours {ours[key]!r} (undeclared)")
    if parity.same_keys:
        problems += [f"{key}: ours has {ours[key]!r}, the published fixture has no such key"
                     for key in sorted(set(ours) - set(published))]
    return problems


@pytest.mark.parametrize("path", sorted(SHIPPED), ids=lambda p: Path(p).stem)
def test_config_matches_published(path):
    parity = SHIPPED[path]
    published = load_fixture(parity.fixture)["values"]
    ours = our_values(ROOT / path)
    if not parity.same_keys:
        ours.update(multisports_convention_values())
    problems = compare(ours, published, parity)
    assert not problems, f"{path} vs {parity.fixture}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", sorted(SHIPPED), ids=lambda p: Path(p).stem)
def test_every_deviation_has_a_reason(path):
    for key, dev in SHIPPED[path].deviations.items():
        assert len(dev.reason) > 20, (path, key)
        assert not same(dev.published, dev.ours), (path, key)


def test_every_config_is_published_or_ours():
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert not set(SHIPPED) & set(OURS)
    missing = sorted(shipped - set(SHIPPED) - set(OURS))
    assert not missing, f"configs neither mapped to a published fixture nor declared our own: {missing}"
    stale = sorted((set(SHIPPED) | set(OURS)) - shipped)
    assert not stale, f"declared configs that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted({p.fixture for p in SHIPPED.values()}))
def test_fixture_names_its_source(name):
    source = load_fixture(name)["source"]
    assert source["repository"].startswith("github.com/")
    assert len(source["commit"]) == 40 and int(source["commit"], 16) >= 0
    assert source["path"]


@pytest.mark.parametrize("path", sorted(MANIFESTS), ids=lambda p: Path(p).stem)
def test_config_builds_the_official_layout(path):
    """The model a config builds has exactly the key set and shapes of the released model (after the filter:
    ACAR-Net's model zoo, or the CW reference's SFR50_VITG_ACAR_CWtrain checkpoint), and loads it strictly."""
    from stad.models.checkpoints import filter_acar_detector, filter_cw_vitsf
    from tests.models.models_testutils import load_manifest, meta_state_dict

    with torch.device("meta"):
        model = builders.build_model(load_config(ROOT / path))
    released = {"state_dict": meta_state_dict(load_manifest(MANIFESTS[path]))}
    official = filter_cw_vitsf(released) if MANIFESTS[path] == CW_MANIFEST else filter_acar_detector(released)
    ours = model.state_dict()
    assert set(ours) == set(official), (sorted(set(ours) - set(official))[:5], sorted(set(official) - set(ours))[:5])
    assert all(tuple(ours[k].shape) == tuple(v.shape) for k, v in official.items())
    model.load_state_dict(official, strict=True)
    if MANIFESTS[path] == CW_MANIFEST:  # what main.py runs on resume_path / pretrain
        assert builders.load_weights(model, released, strict=True) == []


def test_undeclared_drift_is_caught():
    """The comparison itself: an undeclared difference, a wrong declaration and an extra key all fail."""
    published = {"a": 1, "b": [0.45], "c": True}
    assert compare({"a": 1, "b": [0.45], "c": True}, published, Parity("x")) == []
    assert compare({"a": 1, "b": [110.6], "c": True}, published, Parity("x"))
    assert compare({"a": 1, "b": [0.45], "c": False}, published, Parity("x", {"c": Deviation(True, 0, "r")}))
    assert compare({"a": 1, "b": [0.45], "c": True, "d": 0}, published, Parity("x"))
    assert compare({"a": 1, "b": [0.45], "c": True, "d": 0}, published, Parity("x", same_keys=False)) == []
    assert compare({"a": 1.0, "b": [0.45], "c": 1}, published, Parity("x"))  # True is not 1
    assert compare({"a": 1.0, "b": [0.45], "c": True}, published, Parity("x")) == []  # 1 is 1.0


# Weight presets (stad.models.presets) of the released files each published-name evaluation config is for.
PRESETS = [
    pytest.param("configs/ava/eval_SLOWFAST_R50_ACAR_HR2O.yaml", "acar_slowfast_r50_ava", id="ava_r50"),
    pytest.param("configs/ava/eval_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml", "acar_slowfast_r101_ava", id="ava_r101"),
    pytest.param("configs/ava_kinetics/evalAVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml", "acar_slowfast_r101_ava_kinetics",
                 id="ava_kinetics_r101"),
    pytest.param("configs/chaotic_world/eval_VITSF_ACAR_HR2O_CW.yaml", "cw_vitsf_acar", id="cw"),
]


@pytest.mark.parametrize("path, preset", PRESETS)
def test_weight_presets_agree_with_the_published_eval_configs(path, preset):
    """What the engine checks a released file against (builders.check_preprocessing) is what its config says."""
    from stad.models.presets import get_preset

    assert builders.check_preprocessing(load_config(ROOT / path), get_preset(preset), "parity test") == []
