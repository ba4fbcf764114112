"""Articulated stick figures: a pose (joint angles) -> joint positions -> pixels and a person box.

Local frame: origin on the ground under the body, x forward (the way the figure faces), y up,
lengths in units of the standing height H. Limb angles are measured from "straight down",
positive = rotated forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

THIGH, SHIN, TORSO, UPPER_ARM, FOREARM, NECK, HEAD_R = 0.23, 0.23, 0.32, 0.17, 0.16, 0.04, 0.085
LIMB_W, TORSO_W = 0.075, 0.13  # line thickness, units of H


@dataclass(frozen=True)
class Pose:
    """Joint angles (degrees) and root placement of one figure."""

    hip_height: float = THIGH + SHIN
    lift: float = 0.0  # extra height above the ground (jumping)
    lean: float = 0.0  # torso from vertical, + forward
    thighs: tuple[float, float] = (3.0, -3.0)  # near, far leg
    knees: tuple[float, float] = (0.0, 0.0)  # bend, shin = thigh - knee
    arms: tuple[float, float] = (8.0, -8.0)  # near, far upper arm
    elbows: tuple[float, float] = (10.0, 10.0)  # bend, forearm = arm + elbow
    lying: bool = False
    head_dy: float = 0.0


def _dir(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.sin(a), -math.cos(a)])


def joints(pose: Pose) -> dict[str, np.ndarray]:
    """Local joint coordinates (units of H): hip, shoulder, head, knee0/1, foot0/1, elbow0/1, hand0/1."""
    hip = np.array([0.0, pose.hip_height + pose.lift])
    up = -_dir(pose.lean)  # torso points up (+forward lean)
    shoulder = hip + TORSO * up
    head = shoulder + (NECK + HEAD_R + pose.head_dy) * up
    out = {"hip": hip, "shoulder": shoulder, "head": head}
    for i in range(2):
        knee = hip + THIGH * _dir(pose.thighs[i])
        out[f"knee{i}"] = knee
        out[f"foot{i}"] = knee + SHIN * _dir(pose.thighs[i] - pose.knees[i])
        elbow = shoulder + UPPER_ARM * _dir(pose.arms[i] + pose.lean)
        out[f"elbow{i}"] = elbow
        out[f"hand{i}"] = elbow + FOREARM * _dir(pose.arms[i] + pose.lean + pose.elbows[i])
    if pose.lying:  # rotate the standing body onto the ground, head forward, resting on its back
        rot = {k: np.array([v[1], -v[0]]) for k, v in out.items()}
        shift = np.array([-0.5, HEAD_R + 0.01])
        out = {k: v + shift for k, v in rot.items()}
    return out


@dataclass(frozen=True)
class Look:
    """Colours (BGR) of one actor."""

    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    skin: tuple[int, int, int]


def to_screen(local: np.ndarray, x: float, ground_y: float, height: float, facing: int) -> np.ndarray:
    """Local (units of H) -> pixel coordinates, mirrored when facing left (facing = -1)."""
    return np.array([x + facing * local[0] * height, ground_y - local[1] * height])


def screen_joints(pose: Pose, x: float, ground_y: float, height: float, facing: int) -> dict[str, np.ndarray]:
    return {k: to_screen(v, x, ground_y, height, facing) for k, v in joints(pose).items()}


def person_box(points: dict[str, np.ndarray], height: float) -> np.ndarray:
    """Pixel box ``[x1, y1, x2, y2]`` around the drawn figure (limb thickness and head included)."""
    pts = np.stack(list(points.values()))
    pad = LIMB_W * height / 2
    head = points["head"]
    r = HEAD_R * height
    x1 = min(pts[:, 0].min() - pad, head[0] - r)
    x2 = max(pts[:, 0].max() + pad, head[0] + r)
    y1 = min(pts[:, 1].min() - pad, head[1] - r)
    y2 = max(pts[:, 1].max() + pad, head[1] + r)
    return np.array([x1, y1, x2, y2], np.float64)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in color)  # type: ignore[return-value]


def _line(img: np.ndarray, a: np.ndarray, b: np.ndarray, color: tuple, width: int) -> None:
    p, q = (int(round(a[0] * 4)), int(round(a[1] * 4))), (int(round(b[0] * 4)), int(round(b[1] * 4)))
    cv2.line(img, p, q, (20, 20, 20), width + 2, cv2.LINE_AA, shift=2)
    cv2.line(img, p, q, color, width, cv2.LINE_AA, shift=2)


def draw_figure(img: np.ndarray, pts: dict[str, np.ndarray], look: Look, height: float, facing: int) -> None:
    """Draw the figure in place: far limbs (darker) first, torso, near limbs, head with an eye/nose."""
    lw = max(2, int(round(LIMB_W * height)))
    tw = max(3, int(round(TORSO_W * height)))
    far_pants, far_shirt = _shade(look.pants, 0.6), _shade(look.shirt, 0.6)
    _line(img, pts["hip"], pts["knee1"], far_pants, lw)
    _line(img, pts["knee1"], pts["foot1"], far_pants, lw)
    _line(img, pts["shoulder"], pts["elbow1"], far_shirt, lw)
    _line(img, pts["elbow1"], pts["hand1"], _shade(look.skin, 0.7), lw)
    _line(img, pts["hip"], pts["shoulder"], look.shirt, tw)
    _line(img, pts["hip"], pts["knee0"], look.pants, lw)
    _line(img, pts["knee0"], pts["foot0"], look.pants, lw)
    _line(img, pts["shoulder"], pts["elbow0"], look.shirt, lw)
    _line(img, pts["elbow0"], pts["hand0"], look.skin, lw)
    head = pts["head"]
    r = HEAD_R * height
    centre = (int(round(head[0] * 4)), int(round(head[1] * 4)))
    cv2.circle(img, centre, int(round((r + 1) * 4)), (20, 20, 20), -1, cv2.LINE_AA, shift=2)
    cv2.circle(img, centre, int(round(r * 4)), look.skin, -1, cv2.LINE_AA, shift=2)
    # Facing cue: a dark eye and a nose pointing forward.
    body_up = head - pts["shoulder"]
    body_up = body_up / (np.linalg.norm(body_up) + 1e-9)
    forward = np.array([-body_up[1], body_up[0]]) * facing
    if forward @ np.array([facing, 0.0]) < 0:
        forward = -forward
    eye = head + forward * 0.45 * r + body_up * 0.2 * r
    cv2.circle(img, (int(round(eye[0] * 4)), int(round(eye[1] * 4))), max(4, int(round(r * 0.3 * 4))),
               (30, 30, 30), -1, cv2.LINE_AA, shift=2)
    nose = np.array([head + forward * r * 0.8 + body_up * r * 0.3, head + forward * r * 1.45,
                     head + forward * r * 0.8 - body_up * r * 0.3])
    cv2.fillConvexPoly(img, np.round(nose * 4).astype(np.int32), look.skin, cv2.LINE_AA, shift=2)
