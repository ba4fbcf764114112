"""Models of the second stage (imports torch; import explicitly).

Entry points: :func:`build_action_model`, :func:`create_model` / :func:`list_models` (registry),
:class:`ActionDetector`, the losses in :mod:`stad.models.losses` and the checkpoint filters in
:mod:`stad.models.checkpoints`. See docs/models.md.
"""
from stad.models.registry import create_model, list_models, register_model  # noqa: I001
from stad.models.detector import ActionDetector, build_action_model, build_backbone
from stad.models.checkpoints import (filter_acar_detector, filter_acar_head, filter_acar_slowfast,
                                     filter_videomae)
from stad.models.losses import ExclusiveSoftmaxBCELoss, SigmoidBCELoss, build_loss

__all__ = [
    "ActionDetector", "ExclusiveSoftmaxBCELoss", "SigmoidBCELoss", "build_action_model", "build_backbone",
    "build_loss", "create_model", "filter_acar_detector", "filter_acar_head", "filter_acar_slowfast",
    "filter_videomae", "list_models", "register_model",
]
