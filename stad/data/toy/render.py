"""Render a `VideoScript` into frames (BGR uint8) and read off person boxes and labels.

Frame ``n`` (1-based) shows time ``(n - 1) / fps``. The background is a wide, muted, low-contrast
world texture; the camera pans by cropping it. Actors are saturated figures with dark outlines.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stad.data.toy.actions import activity_label_indices, hand_over_object, pose_at
from stad.data.toy.figure import LIMB_W, draw_figure, person_box, screen_joints
from stad.data.toy.script import VideoScript

LABEL_MIN_VISIBLE = 0.35  # visible box fraction needed for a GT box
AMBIGUOUS_MIN_VISIBLE = 0.2  # between this and the above: keyframe excluded (cannot be labelled)


@dataclass(frozen=True)
class ActorState:
    actor: int
    activity: str
    x: float  # world px of the ground point
    ground_y: float
    height: float
    facing: int
    points: dict  # screen joints (camera applied)
    lane: int


def background(script: VideoScript) -> np.ndarray:
    """World texture ``[H, world_width, 3]``: a wall with panels and windows over a tiled floor."""
    rng = np.random.default_rng(script.background_seed)
    h, w = script.height, script.world_width
    img = np.zeros((h, w, 3), np.uint8)
    horizon = int(0.5 * h)
    wall = rng.integers(120, 170, 3)
    floor = rng.integers(90, 130, 3)
    img[:horizon] = wall
    img[horizon:] = floor
    x = 0
    while x < w:  # wall panels of slightly different tone
        pw = int(rng.integers(30, 90))
        img[: horizon, x : x + pw] = np.clip(wall + rng.integers(-12, 13, 3), 0, 255)
        if rng.random() < 0.35:  # a window
            wy, wh = int(rng.integers(8, horizon // 3)), int(rng.integers(horizon // 4, horizon // 2))
            img[wy : wy + wh, x + 6 : x + pw - 6] = np.clip(wall - 30 + rng.integers(-8, 9, 3), 0, 255)
        x += pw
    for y in range(horizon + 6, h, 14):  # faint floor tiles
        img[y] = np.clip(floor.astype(int) - 10, 0, 255)
    noise = rng.normal(0, 4, (h // 4 + 1, w // 4 + 1, 1))
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def actor_states(script: VideoScript, t: float) -> list[ActorState]:
    """Every actor's activity, position and screen joints at time ``t`` (drawing order)."""
    cam = script.cam_x(t)
    states = []
    for group in sorted(script.groups, key=lambda g: g.lane):
        seg = group.segment_at(t)
        lane = script.lanes[group.lane]
        centre = seg.centre(t)
        offsets = (0.0,) if len(group.actors) == 1 else (-seg.gap / 2, seg.gap / 2)
        for k, actor in enumerate(group.actors):
            activity = seg.activities[k]
            pose = pose_at(activity, t + script.actors[actor].phase)
            x = centre + offsets[k]
            pts = screen_joints(pose, x - cam, lane.ground_y, lane.height, seg.facings[k])
            states.append(ActorState(actor, activity, x, lane.ground_y, lane.height, seg.facings[k], pts, group.lane))
    return states


def _hand_over_points(script: VideoScript, t: float, states: list[ActorState]) -> list[np.ndarray]:
    by_actor = {s.actor: s for s in states}
    objects = []
    for group in script.groups:
        seg = group.segment_at(t)
        if seg.kind != "handover":
            continue
        giver, receiver = by_actor[group.actors[seg.giver]], by_actor[group.actors[1 - seg.giver]]
        progress = (t - seg.start) / max(1e-6, seg.end - seg.start)
        objects.append((hand_over_object(giver.points["hand0"], receiver.points["hand0"], progress), giver.height))
    return objects


def render_frame(script: VideoScript, world: np.ndarray, t: float) -> np.ndarray:
    """BGR frame ``[H, W, 3]`` at time ``t``."""
    cam = int(round(script.cam_x(t)))
    img = np.ascontiguousarray(world[:, cam : cam + script.width])
    states = actor_states(script, t)
    for s in states:
        if s.activity in ("sit", "sit_wave"):  # a stool under the hip
            hip = s.points["hip"]
            half = 0.11 * s.height
            top = int(hip[1] + 0.03 * s.height)
            cv2.rectangle(img, (int(hip[0] - half), top), (int(hip[0] + half), int(s.ground_y)), (30, 60, 110), -1)
        draw_figure(img, s.points, script.actors[s.actor].look, s.height, s.facing)
    for centre, height in _hand_over_points(script, t, states):
        r = max(2, int(0.045 * height))
        c = (int(round(centre[0])), int(round(centre[1])))
        cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), (0, 230, 255), -1)
        cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), (20, 20, 20), 1)
    return img


@dataclass(frozen=True)
class VisibleActor:
    actor: int
    box: np.ndarray  # normalised xyxy, clipped to the frame
    visible: float  # fraction of the full box inside the frame
    labels: tuple[int, ...]


def visible_actors(script: VideoScript, t: float) -> list[VisibleActor]:
    """Actors whose box is at least partly in view at ``t`` (any visibility > 0)."""
    out = []
    size = np.array([script.width, script.height, script.width, script.height], np.float64)
    for s in actor_states(script, t):
        full = person_box(s.points, s.height)
        clipped = np.clip(full, 0, size)
        area = (full[2] - full[0]) * (full[3] - full[1])
        inside = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
        frac = inside / area if area > 0 else 0.0
        if frac > 0:
            out.append(VisibleActor(s.actor, (clipped / size).astype(np.float32), frac,
                                    activity_label_indices(s.activity)))
    return sorted(out, key=lambda a: a.actor)


__all__ = ["LIMB_W", "background", "actor_states", "render_frame", "visible_actors", "VisibleActor",
           "LABEL_MIN_VISIBLE", "AMBIGUOUS_MIN_VISIBLE"]
