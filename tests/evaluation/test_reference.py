"""Property tests: random small inputs, the fast evaluator against the slow sequential reference."""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stad.evaluation import evaluate
from stad.structures import LabelMap
from tests.evaluation import reference_impl

CLASS_IDS = (1, 2, 4)
COORD = st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.75, 0.8, 1.0])
SCORE = st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0, 0.333])


@st.composite
def box(draw):
    x = sorted([draw(COORD), draw(COORD)])
    y = sorted([draw(COORD), draw(COORD)])
    return x[0], y[0], x[1], y[1]


@st.composite
def csv_rows(draw, with_score):
    rows = []
    boxes = draw(st.lists(box(), min_size=1, max_size=4))
    for _ in range(draw(st.integers(0, 25))):
        video = draw(st.sampled_from(["a", "b"]))
        t = draw(st.sampled_from([1, 2, 3]))
        b = draw(st.sampled_from(boxes))
        action = draw(st.sampled_from([1, 2, 3, 4]))  # 3 is outside the label map
        last = draw(SCORE) if with_score else draw(st.integers(0, 3))
        rows.append(f"{video},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{action},{last}")
    return rows


def _write(path, rows):
    path.write_text("".join(r + "\n" for r in rows))
    return path


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gt=csv_rows(with_score=False), det=csv_rows(with_score=True),
       capacity=st.sampled_from([0, 1, 2, 3, 5]), ignore=st.booleans(),
       excluded=st.lists(st.sampled_from([("a", 1), ("b", 2)]), max_size=1))
def test_fast_equals_reference(tmp_path, gt, det, capacity, ignore, excluded):
    gt_path = _write(tmp_path / "gt.csv", gt)
    det_path = _write(tmp_path / "det.csv", det)
    excl_path = _write(tmp_path / "ex.csv", [f"{v},{t}" for v, t in excluded])
    labelmap = LabelMap(CLASS_IDS, tuple(f"c{i}" for i in CLASS_IDS))
    result = evaluate(labelmap, gt_path, det_path, excl_path, capacities=[capacity], ignore_keys_without_gt=ignore)
    per_class, mean = reference_impl.evaluate(CLASS_IDS, gt_path, det_path, excluded, capacity, ignore)
    got = result.results[capacity]
    assert _same(got.mAP, mean)
    for class_id in CLASS_IDS:
        assert _same(got.per_class[class_id], per_class[class_id]), class_id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scores=st.lists(st.sampled_from([0.1, 0.2, 0.2, 0.3, 0.9]), min_size=0, max_size=60),
       data=st.data())
def test_average_precision_matches_reference(tmp_path, scores, data):
    from stad.evaluation import average_precision

    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    num_gt = max(sum(labels), 1) + data.draw(st.integers(0, 3))
    expected = reference_impl.voc_ap(scores, labels, num_gt)
    assert average_precision(np.asarray(scores, float), np.asarray(labels, bool), num_gt) == expected


@st.composite
def one_key(draw):
    """One keyframe's rows, heavy on ties: few scores, classes and boxes."""
    boxes = draw(st.lists(box(), min_size=1, max_size=3))
    n = draw(st.integers(1, 40))
    return [(draw(st.sampled_from([0.1, 0.2, 0.3, 0.7])), draw(st.sampled_from([1, 2, 3])),
             *draw(st.sampled_from(boxes))) for _ in range(n)]


@settings(max_examples=300, deadline=None)
@given(rows=one_key())
def test_selection_per_class_order_equals_heap(rows):
    """`kernels.select_rows` (fast path or heap replay, all capacities in one pass) hands on, class
    by class, the same rows in the same order as the official heapq + stable sort."""
    import heapq

    from stad.evaluation import kernels

    score = np.array([r[0] for r in rows], float)
    action = np.array([r[1] for r in rows], np.int64)
    x1, y1, x2, y2 = (np.array([r[i] for r in rows], float) for i in (2, 3, 4, 5))
    capacities = np.arange(0, len(rows) + 2, dtype=np.int64)
    kept = [len(rows) if c < 1 else min(c, len(rows)) for c in capacities]
    out_offsets = np.zeros((len(capacities), 2), np.int64)
    out_offsets[:, 1] = np.cumsum(kept)
    out_offsets[1:, 0] = out_offsets[:-1, 1]
    selected, *_ = kernels.select_rows(np.array([0, len(rows)]), np.arange(len(rows)), capacities, score, action,
                                       y1, x1, y2, x2, np.ones(len(rows), bool), out_offsets,
                                       np.full(len(rows), -1, np.int64), 0, 3)
    for i, capacity in enumerate(capacities):
        heap = []
        for s, a, bx1, by1, bx2, by2 in rows:
            item = (s, a, by1, bx1, by2, bx2)
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif s > heap[0][0]:
                heapq.heapreplace(heap, item)
        official = sorted(heap, key=lambda it: -it[0])
        ours = [(score[r], action[r], y1[r], x1[r], y2[r], x2[r]) for r in selected[out_offsets[i, 0]:out_offsets[i, 1]]]
        for c in (1, 2, 3):
            assert [t for t in ours if t[1] == c] == [t for t in official if t[1] == c], (capacity, c)
