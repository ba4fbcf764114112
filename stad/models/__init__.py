"""Models of the second stage (imports torch; import explicitly).

Entry points: :func:`build_action_model`, :func:`create_model` / :func:`list_models` (registry),
:class:`ActionDetector`, the losses in :mod:`stad.models.losses`, the checkpoint filters in
:mod:`stad.models.checkpoints` and the model presets (weights + their preprocessing) in
:mod:`stad.models.presets`; clip-level recognition: :func:`build_recognizer` /
:func:`load_recognition_weights` (:mod:`stad.models.recognition`). See docs/models.md.
"""
from stad.models.registry import create_model, list_models, register_model  # noqa: I001
from stad.models.action_model import ActionDetector, build_action_model, build_backbone
from stad.models.checkpoints import (filter_acar_detector, filter_acar_head, filter_acar_slowfast,
                                     filter_videomae)
from stad.models.losses import ExclusiveSoftmaxBCELoss, SigmoidBCELoss, build_loss
from stad.models.presets import ModelPreset, Preprocessing, get_preset, infer_preset, list_presets
from stad.models.recognition import Recognizer, build_recognizer, load_recognition_weights

__all__ = [
    "ActionDetector", "ExclusiveSoftmaxBCELoss", "ModelPreset", "Preprocessing", "Recognizer", "SigmoidBCELoss",
    "build_action_model", "build_backbone", "build_loss", "build_recognizer", "create_model", "filter_acar_detector",
    "filter_acar_head", "filter_acar_slowfast", "filter_videomae", "get_preset", "infer_preset", "list_models",
    "list_presets", "load_recognition_weights", "register_model",
]
