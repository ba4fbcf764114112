"""scripts/toy_diagnose.py decoys: predictions equal to the GT separate positives from decoys."""
import csv
import importlib.util
import re
from collections import defaultdict

import pytest

from tests.conftest import ROOT
from stad.data.toy import CLASSES, INTERACTION_CLASSES, generate

spec = importlib.util.spec_from_file_location("toy_diagnose", ROOT / "scripts" / "toy_diagnose.py")
toy_diagnose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy_diagnose)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy"
    generate(out, seed=0, size="small", workers=2, write_video=False, progress=False)
    return out


def _write_predictions(data, path, score_of_label):
    """One row per GT box and class: ``score_of_label(is_labelled)``."""
    labels = defaultdict(set)
    with (data / "val.csv").open() as handle:
        for row in csv.reader(handle):
            labels[tuple(row[:6])].add(int(row[6]))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for key, ids in labels.items():
            for class_id, _, _ in CLASSES:
                writer.writerow([*key, class_id, score_of_label(class_id in ids)])


LINE = re.compile(r"(\S+)\s+positives n=\s*(\d+) median\s+(\S+) \(< 0.5: (\d+)\) \| "
                  r"decoys n=\s*(\d+) median\s+(\S+) \(> 0.5: (\d+)\)$")


def _report(capsys):
    """{class: (positives, median, below 0.5, decoys, median, above 0.5)} from the printed lines."""
    lines = capsys.readouterr().out.strip().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m.group(1) for m in parsed] == list(INTERACTION_CLASSES)
    return {m.group(1): (int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5)), m.group(6), int(m.group(7)))
            for m in parsed}


def test_scripts_are_replanned_from_the_data_folder(small):
    scripts = toy_diagnose.toy_scripts(small, "val")
    assert sorted(scripts) == sorted(p.name for p in (small / "frames").iterdir() if p.name.startswith("toy_val"))


def test_decoys_report_of_perfect_and_inverted_predictions(small, tmp_path, capsys):
    perfect = tmp_path / "perfect.csv"
    _write_predictions(small, perfect, lambda labelled: 1.0 if labelled else 0.0)
    toy_diagnose.decoy_report(small, perfect, "val")
    report = _report(capsys)
    assert sum(r[0] for r in report.values()) > 0 and sum(r[3] for r in report.values()) > 0
    for positives, pos_median, below, decoys, decoy_median, above in report.values():
        assert (pos_median, below) == ("1.00" if positives else "-", 0)
        assert (decoy_median, above) == ("0.00" if decoys else "-", 0)

    inverted = tmp_path / "inverted.csv"
    _write_predictions(small, inverted, lambda labelled: 0.0 if labelled else 1.0)
    toy_diagnose.decoy_report(small, inverted, "val")
    for positives, pos_median, below, decoys, decoy_median, above in _report(capsys).values():
        assert (pos_median, below) == ("0.00" if positives else "-", positives)
        assert (decoy_median, above) == ("1.00" if decoys else "-", decoys)


def test_facing_report_reads_every_val_box(small, tmp_path, capsys):
    """A freshly built demo-architecture model: both probes are fitted and scored on held-out videos."""
    from tests.e2e.demo_testutils import tiny_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config, checkpoint = tiny_model(tmp_path)
    config.rename(run / "config.yaml")
    checkpoint.rename(run / "checkpoints" / "last.pth")
    toy_diagnose.facing_report(small, run, "val")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["max over the box (actor feature)",
                                                      "left-right asymmetry (gate input)"]
    held_out_videos = sorted(toy_diagnose.toy_scripts(small, "val"))[::4]
    with (small / "val.csv").open() as handle:
        boxes = {tuple(r[:6]) for r in csv.reader(handle) if r[0] in held_out_videos}
    for line in lines:
        accuracy, n = re.search(r"accuracy (\d\.\d{3}) \(n=(\d+);", line).groups()
        assert 0.0 <= float(accuracy) <= 1.0 and int(n) == len(boxes)


def test_decoys_report_of_no_rows_and_bad_input(small, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    toy_diagnose.decoy_report(small, empty, "val")
    assert all(r == (0, "-", 0, 0, "-", 0) for r in _report(capsys).values())

    from stad.data.formats.errors import FormatError

    bad = tmp_path / "bad.csv"
    bad.write_text("toy_val_000,0001,0.1,0.1,0.5,0.9,8,0.5\ntoy_val_000,0001,0.1,0.1,0.5,0.9,talk,0.5\n")
    with pytest.raises(FormatError, match=r"bad\.csv.*2.*action_id"):
        toy_diagnose.decoy_report(small, bad, "val")
    other = tmp_path / "other.csv"
    other.write_text("toy_train_000,0001,0.1,0.1,0.5,0.9,8,0.5\n")
    with pytest.raises(SystemExit, match=r"other\.csv: video 'toy_train_000' is not in the val split"):
        toy_diagnose.decoy_report(small, other, "val")


def test_facing_report_needs_an_acar_head(small, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from stad.models.heads import LinearHead

    monkeypatch.setattr(toy_diagnose, "_load", lambda run, data, split: (SimpleNamespace(head=LinearHead(8, 11)), []))
    with pytest.raises(SystemExit, match=r"run: the model has a LinearHead, not the ACAR head"):
        toy_diagnose.facing_report(small, tmp_path / "run", "val")
