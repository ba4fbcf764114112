"""Toy action classes and what each actor "does": per-activity poses, own labels and relations.

An *activity* is what one actor does during a script segment (``walk``, ``give``, ...). Its own
labels are fixed (table `ACTIVITY_LABELS`), its look comes from `pose_at`. Classes:

* pose (one frame suffices): stand, sit, lie;
* motion (need several frames): walk, run, wave, jump - a single frame of a walking leg cycle,
  a raised arm or a crouch is ambiguous with standing/idle poses, the motion is not;
* interaction (need the other actor): an actor doing a *relational* activity (`RELATIONS`) carries
  the interaction class only when a partner stands outside its box in the geometry the relation
  defines (same depth lane, in front of it at a centre distance within ``[min_gap, max_gap]``
  standing heights, facing it or walking the same way, doing the partner activity). The same
  activity without such a partner is a *decoy*: identical box content, no interaction label.

  - talk-to: gesturing while a listener (arms crossed, nodding) faces it (decoy: gesturing at empty
    space or with the only other person behind it);
  - hand-over: arm held out with a yellow bar whose far end a taker, reaching with both hands,
    holds (decoy: the same bar held out into empty space);
  - push: leaning in with arms out, stepping forward, while the partner in front stumbles backwards,
    arms thrown up (decoy: the same shove with nobody in front);
  - follow: walking behind another walker going the same way (decoy: a lone walker, a walker with
    someone following it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from stad.data.toy.figure import SHIN, THIGH, Pose, joints
from stad.structures import LabelMap

CLASSES: tuple[tuple[int, str, str], ...] = (
    (1, "stand", "PERSON_MOVEMENT"),
    (2, "sit", "PERSON_MOVEMENT"),
    (3, "lie", "PERSON_MOVEMENT"),
    (4, "walk", "PERSON_MOVEMENT"),
    (5, "run", "PERSON_MOVEMENT"),
    (6, "wave", "PERSON_MOVEMENT"),
    (7, "jump", "PERSON_MOVEMENT"),
    (8, "talk-to", "PERSON_INTERACTION"),
    (9, "hand-over", "PERSON_INTERACTION"),
    (10, "push", "PERSON_INTERACTION"),
    (11, "follow", "PERSON_INTERACTION"),
)
POSE_CLASSES = ("stand", "sit", "lie")
MOTION_CLASSES = ("walk", "run", "wave", "jump")
INTERACTION_CLASSES = ("talk-to", "hand-over", "push", "follow")


def toy_labelmap() -> LabelMap:
    return LabelMap(tuple(c[0] for c in CLASSES), tuple(c[1] for c in CLASSES), tuple(c[2] for c in CLASSES))


_NAME_TO_INDEX = {name: i for i, (_, name, _) in enumerate(CLASSES)}

ACTIVITY_LABELS: dict[str, tuple[str, ...]] = {
    "stand": ("stand",), "sit": ("sit",), "lie": ("lie",),
    "wave": ("stand", "wave"), "sit_wave": ("sit", "wave"), "jump": ("stand", "jump"),
    "walk": ("stand", "walk"), "run": ("stand", "run"),
    "talk": ("stand",), "give": ("stand",), "push": ("stand",), "pushed": ("stand",),
    "listen": ("stand",), "take": ("stand",),  # the partners' reactions: no class of their own
}
# Speed of the activity, in standing heights per second (0: stays in place).
SPEED = {"walk": 0.42, "run": 0.8, "push": 0.3, "pushed": 0.3}


@dataclass(frozen=True)
class Relation:
    """When an actor doing a relational activity carries the interaction class ``label``.

    A partner must be on the same lane, doing ``partner_activity``, its ground point ``min_gap`` ..
    ``max_gap`` standing heights in front of the actor (along the actor's facing), and facing the
    actor (``partner_facing="towards"``) or the same way (``"same"``).
    """

    label: str
    partner_activity: str
    partner_facing: str
    min_gap: float
    max_gap: float

    def holds(self, facing: int, partner_activity: str, partner_facing: int, ahead: float) -> bool:
        """``ahead``: partner x minus actor x, times the actor's facing, in standing heights."""
        facing_ok = partner_facing == (-facing if self.partner_facing == "towards" else facing)
        return partner_activity == self.partner_activity and facing_ok and self.min_gap <= ahead <= self.max_gap


# Centre distances are chosen so the partner's box never touches the actor's box (tested).
RELATIONS: dict[str, Relation] = {
    "talk": Relation("talk-to", "listen", "towards", 1.25, 2.1),
    "give": Relation("hand-over", "take", "towards", 1.15, 1.85),
    "push": Relation("push", "pushed", "towards", 1.15, 1.9),
    "walk": Relation("follow", "walk", "same", 1.1, 1.9),
}
# Centre distance (standing heights) the scripts draw for a pair doing a relation: well inside the
# relation's range, so positives and decoys are not separated by a hair.
PAIR_GAP_RANGE = {"talk": (1.4, 1.9), "handover": (1.3, 1.65), "push": (1.3, 1.7), "follow": (1.3, 1.7),
                  "split": (1.2, 1.8), "turned": (1.3, 1.8)}


def activity_label_indices(activity: str) -> tuple[int, ...]:
    """0-based class indices of an activity (sorted)."""
    return tuple(sorted(_NAME_TO_INDEX[n] for n in ACTIVITY_LABELS[activity]))


def _grounded(pose: Pose) -> Pose:
    """Raise or lower the hip so the lowest foot touches the ground."""
    probe = joints(replace(pose, hip_height=0.0, lift=0.0))
    lowest = min(probe["foot0"][1], probe["foot1"][1])
    return replace(pose, hip_height=-lowest)


def _stand(t: float) -> Pose:
    sway = 3.0 * math.sin(2 * math.pi * 0.3 * t)
    return Pose(thighs=(4.0, -4.0), arms=(8.0 + sway, -8.0 - sway))


def _sit() -> Pose:
    return Pose(hip_height=SHIN + 0.02, thighs=(88.0, 82.0), knees=(88.0, 82.0), arms=(40.0, 30.0),
                elbows=(45.0, 45.0))


def _walk_cycle(t: float, freq: float, swing: float, arm_swing: float, elbow: float) -> Pose:
    phi = 2 * math.pi * freq * t
    s = math.sin(phi)
    knee_a = max(0.0, 30.0 * math.sin(phi + 1.2))
    knee_b = max(0.0, -30.0 * math.sin(phi + 1.2))
    return _grounded(Pose(thighs=(swing * s, -swing * s), knees=(knee_a + 5, knee_b + 5),
                          arms=(-arm_swing * s, arm_swing * s), elbows=(elbow, elbow)))


def _jump(t: float) -> Pose:
    p = (t / 0.8) % 1.0
    if 0.25 <= p < 0.85:  # airborne
        q = math.sin(math.pi * (p - 0.25) / 0.6)
        return Pose(lift=0.26 * q, thighs=(12.0, 8.0), knees=(20.0, 16.0), arms=(60 + 100 * q, 50 + 100 * q),
                    elbows=(10.0, 10.0))
    g = ((p - 0.85) % 1.0) / 0.4  # 0..1 over the ground phase
    d = math.sin(math.pi * g)
    legs = Pose(thighs=(40 * d, 36 * d), knees=(80 * d, 72 * d), arms=(-30 * d + 10, -25 * d + 5),
                elbows=(15.0, 15.0), lean=15 * d)
    return _grounded(legs)


def _wave(base: Pose, t: float) -> Pose:
    swing = 40.0 * math.sin(2 * math.pi * 2.2 * t)
    return replace(base, arms=(150.0, base.arms[1]), elbows=(swing, base.elbows[1]))


def pose_at(activity: str, t: float) -> Pose:
    """Pose of an actor doing ``activity`` at time ``t`` (s, including the actor's phase offset)."""
    if activity == "stand":
        return _stand(t)
    if activity == "sit":
        return _sit()
    if activity == "lie":
        return Pose(lying=True, thighs=(0.0, 0.0), arms=(0.0, 0.0), elbows=(0.0, 0.0))
    if activity == "wave":
        return _wave(_stand(t), t)
    if activity == "sit_wave":
        return _wave(_sit(), t)
    if activity == "jump":
        return _jump(t)
    if activity == "walk":
        return _walk_cycle(t, 1.7, 26.0, 24.0, 15.0)
    if activity == "run":
        p = _walk_cycle(t, 2.6, 46.0, 55.0, 85.0)
        return replace(p, lean=16.0, lift=0.04 * abs(math.cos(2 * math.pi * 2.6 * t)))
    if activity == "talk":  # both hands gesture towards the partner, head nods
        gesture = math.sin(2 * math.pi * 1.6 * t)
        return Pose(thighs=(4.0, -4.0), arms=(55 + 40 * gesture, 35 - 35 * gesture),
                    elbows=(70 + 45 * math.sin(2 * math.pi * 2.1 * t), 60.0),
                    head_dy=0.03 * math.sin(2 * math.pi * 3.1 * t))
    if activity == "give":  # holds a bar out at arm's length, level (a pair's bar touches both hands)
        return Pose(thighs=(6.0, -6.0), arms=(78.0, 30.0), elbows=(8.0, 40.0), lean=4.0)
    if activity == "take":  # both hands reach for the bar's far end
        return Pose(thighs=(6.0, -6.0), arms=(78.0, 72.0), elbows=(8.0, 14.0), lean=-6.0)
    if activity == "listen":  # arms crossed over the belly, nodding
        return Pose(thighs=(4.0, -4.0), arms=(25.0, 20.0), elbows=(95.0, 100.0),
                    head_dy=0.035 * math.sin(2 * math.pi * 1.3 * t))
    if activity == "push":
        p = _walk_cycle(t, 1.1, 22.0, 0.0, 0.0)  # (a negative lean tilts the torso forward)
        return replace(p, lean=-18.0, arms=(98.0, 92.0), elbows=(10.0, 14.0))
    if activity == "pushed":
        p = _walk_cycle(-t, 1.4, 20.0, 0.0, 0.0)
        flail = 20.0 * math.sin(2 * math.pi * 2.0 * t)
        # arms thrown up and back: nothing of the pushed actor reaches towards the pusher's box
        return replace(p, lean=18.0, arms=(167.0 + flail, 152.0 - flail), elbows=(25.0, 25.0))
    raise KeyError(f"unknown toy activity {activity!r}")


LEG_LENGTH = THIGH + SHIN
