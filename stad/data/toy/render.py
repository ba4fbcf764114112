"""Render a `VideoScript` into frames (BGR uint8) and read off person boxes and labels.

Frame ``n`` (1-based) shows time ``(n - 1) / fps``. The background is a wide, muted, low-contrast
world texture; the camera pans by cropping it. Actors are saturated figures with dark outlines.
Interaction labels are read off each frame's geometry (`relation_partners`), never off the script.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stad.data.toy.actions import CLASSES, RELATIONS, activity_label_indices, pose_at
from stad.data.toy.figure import LIMB_W, draw_figure, joints, person_box, screen_joints
from stad.data.toy.script import VideoScript

LABEL_MIN_VISIBLE = 0.35  # visible box fraction needed for a GT box
AMBIGUOUS_MIN_VISIBLE = 0.2  # between this and the above: keyframe excluded (cannot be labelled)
PARTNER_MIN_VISIBLE = 0.5  # a labelled interaction whose partner is less visible: keyframe excluded
_CLASS_INDEX = {name: i for i, (_, name, _) in enumerate(CLASSES)}


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
    reach: float = 0.0  # "give": px from the actor to where its bar's far end is held (a partner's place)


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
            states.append(ActorState(actor, activity, x, lane.ground_y, lane.height, seg.facings[k], pts, group.lane,
                                     seg.gap))
    return states


def relation_partners(states: list[ActorState]) -> dict[int, int]:
    """Actor -> the partner that gives it its interaction class (`actions.RELATIONS`); the nearest wins."""
    partners = {}
    for s in states:
        relation = RELATIONS.get(s.activity)
        if relation is None:
            continue
        best = None
        for other in states:
            if other.actor == s.actor or other.lane != s.lane:
                continue
            ahead = (other.x - s.x) * s.facing / s.height
            if relation.holds(s.facing, other.activity, other.facing, ahead) and (best is None or ahead < best[0]):
                best = (ahead, other.actor)
        if best is not None:
            partners[s.actor] = best[1]
    return partners


def _bars(states: list[ActorState], partners: dict[int, int], cam: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Hand-over bars ``(near end, far end, height)``: from the giver's hand to the taker's, or held
    out into empty space by a lone "give" (as far as a taker's hand would be)."""
    by_actor = {s.actor: s for s in states}
    bars, done = [], set()
    for s in states:
        if s.activity != "give" or s.actor in done:
            continue
        hand = s.points["hand0"]
        partner = partners.get(s.actor)
        if partner is not None and by_actor[partner].activity == "take":
            bars.append((hand, by_actor[partner].points["hand0"], s.height))
            done.update((s.actor, partner))
            continue
        taker_hand = joints(pose_at("take", 0.0))["hand0"]  # a static pose: where a taker would hold it
        far = np.array([s.x - cam + s.facing * (s.reach - taker_hand[0] * s.height),
                        s.ground_y - taker_hand[1] * s.height])
        bars.append((hand, far, s.height))
        done.add(s.actor)
    return bars


def render_frame(script: VideoScript, world: np.ndarray, t: float) -> np.ndarray:
    """BGR frame ``[H, W, 3]`` at time ``t``."""
    cam = int(round(script.cam_x(t)))
    img = np.ascontiguousarray(world[:, cam : cam + script.width])
    states = actor_states(script, t)
    partners = relation_partners(states)
    for s in states:
        if s.activity in ("sit", "sit_wave"):  # a stool under the hip
            hip = s.points["hip"]
            half = 0.11 * s.height
            top = int(hip[1] + 0.03 * s.height)
            cv2.rectangle(img, (int(hip[0] - half), top), (int(hip[0] + half), int(s.ground_y)), (30, 60, 110), -1)
        draw_figure(img, s.points, script.actors[s.actor].look, s.height, s.facing)
    for near, far, height in _bars(states, partners, script.cam_x(t)):
        width = max(2, int(round(0.05 * height)))
        p, q = (int(round(near[0] * 4)), int(round(near[1] * 4))), (int(round(far[0] * 4)), int(round(far[1] * 4)))
        cv2.line(img, p, q, (20, 20, 20), width + 2, cv2.LINE_AA, shift=2)
        cv2.line(img, p, q, (0, 230, 255), width, cv2.LINE_AA, shift=2)
    return img


@dataclass(frozen=True)
class VisibleActor:
    actor: int
    box: np.ndarray  # normalised xyxy, clipped to the frame
    visible: float  # fraction of the full box inside the frame
    labels: tuple[int, ...]
    activity: str = ""
    partner: int = -1  # the actor giving it its interaction class, -1: none
    partner_visible: float = 1.0  # that partner's visible fraction (1 without a partner)


def _visible_fraction(full: np.ndarray, size: np.ndarray) -> tuple[float, np.ndarray]:
    clipped = np.clip(full, 0, size)
    area = (full[2] - full[0]) * (full[3] - full[1])
    inside = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
    return (inside / area if area > 0 else 0.0), clipped


def visible_actors(script: VideoScript, t: float) -> list[VisibleActor]:
    """Actors whose box is at least partly in view at ``t`` (any visibility > 0), with their labels:
    own labels of the activity plus the interaction class when `relation_partners` finds a partner."""
    size = np.array([script.width, script.height, script.width, script.height], np.float64)
    states = actor_states(script, t)
    partners = relation_partners(states)
    seen = {s.actor: _visible_fraction(person_box(s.points, s.height), size) for s in states}
    out = []
    for s in states:
        frac, clipped = seen[s.actor]
        if frac <= 0:
            continue
        labels = activity_label_indices(s.activity)
        partner = partners.get(s.actor, -1)
        if partner >= 0:
            labels = tuple(sorted(labels + (_CLASS_INDEX[RELATIONS[s.activity].label],)))
        out.append(VisibleActor(s.actor, (clipped / size).astype(np.float32), frac, labels, s.activity, partner,
                                seen[partner][0] if partner >= 0 else 1.0))
    return sorted(out, key=lambda a: a.actor)


__all__ = ["LIMB_W", "background", "actor_states", "relation_partners", "render_frame", "visible_actors",
           "VisibleActor", "LABEL_MIN_VISIBLE", "AMBIGUOUS_MIN_VISIBLE", "PARTNER_MIN_VISIBLE"]
