"""Clip-level action recognition (``task: recognition``): backbones, clip heads, recognizer, weights.

    >>> from stad.models.recognition import build_recognizer, load_recognition_weights
    >>> model = build_recognizer("swin3d_t", head="multi_head", label_groups={"body": 7, "action": 52})
    >>> load_recognition_weights(model, "swin_tiny_ma52.pth")   # MMAction2 / Video Swin / torchvision / ours
    >>> logits = model(clips)   # clips [B, 3, T, H, W] -> {"body": [B, 7], "action": [B, 52]}

Backbones registered here (kind 'backbone'): swin3d_t/s/b, swin3d_toy, mvit_v2_s, mvit_toy,
r2plus1d_18, s3d; SlowFast and ViT backbones work too. See docs/models.md (Recognition).
"""
from stad.models.recognition.heads import CLIP_HEADS, ClipHead, build_clip_head  # noqa: I001
from stad.models.recognition.swin import Swin3D
from stad.models.recognition.video_nets import MViTBackbone, S3DBackbone, VideoResNetBackbone
from stad.models.recognition.recognizer import Recognizer, build_recognizer, pooled_features
from stad.models.recognition.weights import (CheckpointLayoutError, LoadReport, detect_layout,
                                             load_recognition_weights)

__all__ = [
    "CLIP_HEADS", "CheckpointLayoutError", "ClipHead", "LoadReport", "MViTBackbone", "Recognizer", "S3DBackbone",
    "Swin3D", "VideoResNetBackbone", "build_clip_head", "build_recognizer", "detect_layout",
    "load_recognition_weights", "pooled_features",
]
