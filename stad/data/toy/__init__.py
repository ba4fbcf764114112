"""Synthetic "toy actors": articulated figures acting over a textured, sometimes panning background.

Conventions (the toy's own, FORMATS.md style): 30 fps, frames numbered from 1, frame ``n`` shows
time ``(n - 1) / 30`` s, so keyframe ``t`` (integer seconds) is frame ``t * 30 + 1``; keyframes are at
``t = 1 .. duration - 1`` so a +-1 s clip fits inside the video (the ACAR window of +-1.5 s is
clamped to ``[1, num_frames]``). See `stad.data.formats.conventions.TOY`.

    python -m stad.data.toy --out data/toy --seed 0 [--size tiny|small|default|large]
"""
from stad.data.toy.actions import CLASSES, INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES, toy_labelmap
from stad.data.toy.generate import SIZES, ToySize, generate

__all__ = ["CLASSES", "POSE_CLASSES", "MOTION_CLASSES", "INTERACTION_CLASSES", "toy_labelmap", "SIZES",
           "ToySize", "generate"]
