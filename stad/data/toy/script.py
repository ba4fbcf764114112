"""Scene scripts: who is where and does what, planned per video before anything is drawn.

A video has 2-3 *groups* on two depth lanes (the front lane occludes the back one). A group is a
solo actor or a pair; its timeline is a list of segments of 2-3 s whose boundaries fall on half
seconds, so every 1 Hz keyframe sits in the middle of a segment and a clip of +-0.5 s around it
sees one activity. Activities are drawn with weights that favour the classes seen least so far in
the split, so every class is well represented. Group positions are continuous in time.

Interactions come from pairs placed in a relation's geometry (`actions.RELATIONS`); their *decoys*
(the same relational activity without a partner in that geometry: alone, or with the other pair
member behind it) are balanced like classes, so roughly as many decoys as positives are planned.
Labels are not taken from the script: the renderer derives them from the geometry of each frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stad.data.toy.actions import ACTIVITY_LABELS, PAIR_GAP_RANGE, SPEED
from stad.data.toy.figure import Look

SOLO_ACTIVITIES = ("stand", "sit", "lie", "wave", "sit_wave", "jump", "walk", "run", "talk", "give", "push")
PAIR_ACTIVITIES = ("talk", "handover", "push", "follow", "split", "turned")
SPLIT_CHOICES = ("stand", "sit", "wave", "sit_wave", "jump")
TURNED_CHOICES = ("talk", "give")  # "turned" pair: this activity facing away from the other member
# What the class balancer counts for a relational activity planned without a partner.
DECOY_TAG = {"talk": "decoy:talk-to", "give": "decoy:hand-over", "push": "decoy:push"}
SHIRTS = ((40, 40, 220), (220, 90, 30), (40, 170, 40), (0, 140, 255), (200, 40, 200), (220, 200, 0),
          (0, 215, 255), (120, 60, 255), (255, 120, 160), (30, 120, 120))
PANTS = ((60, 30, 10), (25, 25, 25), (20, 50, 90), (90, 60, 60), (40, 80, 40))
SKINS = ((140, 180, 230), (90, 130, 190), (60, 90, 140), (170, 200, 240))


@dataclass(frozen=True)
class Lane:
    ground_y: float  # px
    height: float  # standing height H, px


@dataclass(frozen=True)
class Segment:
    """One activity of a group over ``[start, end)`` seconds."""

    start: float
    end: float
    kind: str  # solo activity or pair activity
    activities: tuple[str, ...]  # per actor of the group
    facings: tuple[int, ...]
    direction: int  # -1, 0, +1: how the group centre moves
    speed: float  # px/s
    centre0: float  # world x of the group centre at ``start``
    gap: float = 0.0  # px between pair members (solo "give": where the bar's far end is)

    def centre(self, t: float) -> float:
        return self.centre0 + self.direction * self.speed * (t - self.start)


@dataclass
class Group:
    actors: tuple[int, ...]
    lane: int
    segments: list[Segment] = field(default_factory=list)

    def segment_at(self, t: float) -> Segment:
        for seg in self.segments:
            if t < seg.end:
                return seg
        return self.segments[-1]


@dataclass(frozen=True)
class ActorSpec:
    look: Look
    phase: float  # seconds added to the actor's clock so cycles are not in sync


@dataclass
class VideoScript:
    video: str
    width: int
    height: int
    fps: int
    duration: int  # seconds; frames 1..duration*fps
    cam_x0: float
    cam_speed: float  # px/s
    world_width: int
    lanes: tuple[Lane, Lane]
    actors: list[ActorSpec]
    groups: list[Group]
    background_seed: int

    @property
    def num_frames(self) -> int:
        return self.duration * self.fps

    def cam_x(self, t: float) -> float:
        return self.cam_x0 + self.cam_speed * t


def make_lanes(width: int, height: int) -> tuple[Lane, Lane]:
    """Back lane (index 0, smaller, drawn first) and front lane (index 1)."""
    return Lane(0.66 * height, 0.36 * height), Lane(0.96 * height, 0.46 * height)


class ClassBalancer:
    """Counts labelled keyframes per class (and per decoy kind) in a split; weighs candidates by rarity."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def weight(self, tags: tuple[str, ...]) -> float:
        names = set(tags) - {"stand"}  # a repeated tag is counted once per box it will label
        if not names:
            return 0.05
        return max(1.0 / (1.0 + self.counts.get(n, 0) / 4.0) ** 2 for n in names)

    def add(self, tags: tuple[str, ...], keyframes: int) -> None:
        for n in tags:
            self.counts[n] = self.counts.get(n, 0) + keyframes


def planned_tags(kind: str, activities: tuple[str, ...], lane: int = 0) -> tuple[str, ...]:
    """The labels (and decoy kinds) a segment is planned to show, for the class balancer.

    ``kind`` is a pair kind for two activities, else the solo activity itself ("talk" alone is a decoy).
    Interaction and decoy tags are counted per lane (``talk-to@1``), so interacting actors and decoys
    are balanced on each lane and a box's size or height says nothing about its interaction.
    """
    tags = [n for a in activities for n in ACTIVITY_LABELS[a]]
    interaction = {"talk": "talk-to", "handover": "hand-over", "push": "push", "follow": "follow"}
    if len(activities) == 2 and kind in interaction:  # one member carries the class
        tags.append(f"{interaction[kind]}@{lane}")
    elif len(activities) == 1 or kind == "turned":
        tags += [f"{DECOY_TAG[a]}@{lane}" for a in activities if a in DECOY_TAG]
    return tuple(tags)


def _segment_bounds(rng: np.random.Generator, duration: int) -> list[tuple[float, float]]:
    bounds, start = [], 0.0
    while start < duration:
        end = min(float(duration), (np.floor(start) + 0.5 if start else 0.5) + int(rng.integers(2, 4)))
        bounds.append((start, end))
        start = end
    return bounds


def _candidates(group: Group, rng: np.random.Generator) -> list[tuple[str, tuple[str, ...]]]:
    if len(group.actors) == 1:
        return [(a, (a,)) for a in SOLO_ACTIVITIES]
    out = []
    for kind in PAIR_ACTIVITIES:
        if kind == "talk":
            out.append((kind, ("talk", "listen")))
        elif kind == "handover":
            out.append((kind, ("give", "take")))
        elif kind == "push":
            out.append((kind, ("push", "pushed")))
        elif kind == "follow":
            out.append((kind, ("walk", "walk")))
        elif kind == "turned":
            other = SPLIT_CHOICES[int(rng.integers(0, len(SPLIT_CHOICES)))]
            out.append((kind, (TURNED_CHOICES[int(rng.integers(0, len(TURNED_CHOICES)))], other)))
        else:
            out.append((kind, tuple(SPLIT_CHOICES[int(i)] for i in rng.integers(0, len(SPLIT_CHOICES), 2))))
    return out


def _moving(kind: str) -> bool:
    return kind in ("walk", "run", "push", "follow")


def _facings(kind: str, acts: tuple[str, ...], direction: int, moving: bool, n_actors: int,
             rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Facings of the group's actors (left member first) and the activities in that order."""
    if n_actors == 1:
        return ((direction,) if moving else (int(rng.choice([-1, 1])),)), acts
    if kind in ("talk", "handover", "push"):
        if kind == "push" and direction < 0:  # the pusher is always the one behind
            acts = ("pushed", "push")
        elif kind != "push" and rng.random() < 0.5:  # the talker / giver on either side
            acts = (acts[1], acts[0])
        return (1, -1), acts
    if kind == "follow":
        return (direction, direction), acts
    if kind == "turned":  # the relational member faces away from the other one
        other = int(rng.choice([-1, 1]))
        return ((-1, other), acts) if rng.random() < 0.5 else ((other, 1), (acts[1], acts[0]))
    return tuple(int(rng.choice([-1, 1])) for _ in range(n_actors)), acts


def relation_roles(kind: str, activities: tuple[str, ...]) -> dict[str, str]:
    """Relational activity -> "pair" (planned with its partner) or "decoy" (planned without one)."""
    pairs = {"talk": "talk", "handover": "give", "push": "push", "follow": "walk"}
    if len(activities) == 2:
        if kind in pairs:
            return {pairs[kind]: "pair"}
        return {a: "decoy" for a in activities if kind == "turned" and a in DECOY_TAG}
    return {activities[0]: "decoy"} if activities[0] in ("talk", "give", "push", "walk") else {}


def _clashes(script: VideoScript, group: Group, start: float, end: float, kind: str, acts: tuple[str, ...]) -> bool:
    """True when another group, at an overlapping time, plans the same relation in the other role.

    A frame never shows a decoy of a relation next to a pair doing it: whether the partner activity
    is in the scene at all is the context that decides (the geometry still defines every label)."""
    mine = relation_roles(kind, acts)
    for other in script.groups:
        if other is group:
            continue
        for seg in other.segments:
            if seg.start < end and start < seg.end:
                theirs = relation_roles(seg.kind, seg.activities)
                if any(theirs.get(a, role) != role for a, role in mine.items()):
                    return True
    return False


def _plan_segment(script: VideoScript, group: Group, start: float, end: float, centre: float,
                  rng: np.random.Generator, balancer: ClassBalancer) -> Segment:
    lane = script.lanes[group.lane]
    left, right = script.cam_x(start), script.cam_x(start) + script.width
    outside = centre < left - 0.05 * script.width or centre > right + 0.05 * script.width
    cands = _candidates(group, rng)
    if outside:  # bring people back into view: they enter walking (or running)
        cands = [c for c in cands if _moving(c[0])]
    cands = [c for c in cands if not _clashes(script, group, start, end, *c)] or cands
    weights = np.array([balancer.weight(planned_tags(kind, acts, group.lane)) for kind, acts in cands])
    kind, acts = cands[int(rng.choice(len(cands), p=weights / weights.sum()))]
    if kind == "run" or outside:  # runners cross towards the far side: longest time in view
        direction = 1 if centre < (left + right) / 2 else -1
    elif centre < left + 0.3 * script.width:
        direction = 1
    elif centre > right - 0.3 * script.width:
        direction = -1
    else:
        direction = int(rng.choice([-1, 1]))
    moving = _moving(kind)
    gap = 0.0
    if len(acts) == 2 or kind == "give":  # a lone "give" holds its bar out as far as a pair's would reach
        gap = float(rng.uniform(*PAIR_GAP_RANGE["handover" if kind == "give" else kind])) * lane.height
    if len(acts) == 2 and not outside:  # keep both members in view: a cut-off partner makes the keyframe unusable
        middle = script.cam_x((start + end) / 2) + script.width / 2
        if moving:
            direction = 1 if centre < middle else -1
        else:
            room = script.width / 2 - gap / 2 - 0.3 * lane.height
            centre = float(np.clip(centre, middle - room, middle + room)) if room > 0 else middle
    speed = SPEED.get(acts[0], 0.0) * lane.height if moving else 0.0
    facings, acts = _facings(kind, acts, direction, moving, len(group.actors), rng)
    seg = Segment(start, end, kind, acts, facings, direction if moving else 0, speed, centre, gap)
    half = gap / 2 if len(acts) == 2 else 0.0  # a pair counts where both members are in view
    visible = sum(1 for t in range(int(np.ceil(start)), int(np.ceil(end)))
                  if 0 < t < script.duration and script.cam_x(t) < seg.centre(t) - half
                  and seg.centre(t) + half < script.cam_x(t) + script.width)
    balancer.add(planned_tags(kind, acts, group.lane), visible)
    return seg


def _new_look(rng: np.random.Generator, used: set[int]) -> Look:
    free = [i for i in range(len(SHIRTS)) if i not in used] or list(range(len(SHIRTS)))
    shirt = int(rng.choice(free))
    used.add(shirt)
    return Look(SHIRTS[shirt], PANTS[int(rng.integers(len(PANTS)))], SKINS[int(rng.integers(len(SKINS)))])


def plan_video(video: str, rng: np.random.Generator, balancer: ClassBalancer, width: int = 320,
               height: int = 240, fps: int = 30, duration: int = 10) -> VideoScript:
    """Draw one video's script (deterministic given ``rng`` and the balancer state)."""
    pan = float(rng.uniform(8, 18) * rng.choice([-1, 1])) if rng.random() < 0.5 else 0.0
    margin = 0.5 * width
    world_width = int(width + abs(pan) * duration + 2 * margin)
    cam_x0 = margin if pan >= 0 else margin + abs(pan) * duration
    lanes = make_lanes(width, height)
    # Layout: a pair and a solo on different lanes, often one more solo (either lane) or pair (the
    # solo's lane). The pair's lane is drawn too: interacting actors and decoys must not differ by
    # their size or height in the frame.
    pair_lane = int(rng.integers(0, 2))
    layout = [(2, pair_lane), (1, 1 - pair_lane)]
    if rng.random() < 0.6:
        layout.append((1, int(rng.integers(0, 2))) if rng.random() < 0.7 else (2, 1 - pair_lane))
    script = VideoScript(video, width, height, fps, duration, cam_x0, pan, world_width, lanes, [], [],
                         int(rng.integers(2**31)))
    used: set[int] = set()
    per_lane: dict[int, int] = {}
    for size, lane in layout:
        ids = tuple(range(len(script.actors), len(script.actors) + size))
        script.actors.extend(ActorSpec(_new_look(rng, used), float(rng.uniform(0, 2))) for _ in ids)
        script.groups.append(Group(ids, lane))
        per_lane[lane] = per_lane.get(lane, 0) + 1
    slot: dict[int, int] = {}
    for group in script.groups:
        k, n = slot.get(group.lane, 0), per_lane[group.lane]
        slot[group.lane] = k + 1
        centre = cam_x0 + width * (k + 0.5) / n + rng.uniform(-0.08, 0.08) * width
        if len(group.actors) == 1 and rng.random() < 0.25:  # enters from outside the view
            centre = cam_x0 + (-0.12 * width if rng.random() < 0.5 else 1.12 * width)
        for start, end in _segment_bounds(rng, duration):
            seg = _plan_segment(script, group, start, end, centre, rng, balancer)
            group.segments.append(seg)
            centre = seg.centre(end)
    return script


def plan_split(prefix: str, n_videos: int, seed: int, split_index: int, **kwargs: int) -> list[VideoScript]:
    """Scripts ``<prefix>_000``... of one split, planned in order with a shared class balancer."""
    balancer = ClassBalancer()
    rng = np.random.default_rng([seed, split_index])
    return [plan_video(f"{prefix}_{i:03d}", rng, balancer, **kwargs) for i in range(n_videos)]
