"""Every CLI ends bad input with one clear line and exit code 2, never a traceback (stad.cli.run_cli)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stad.cli import run_cli
from stad.config import ConfigError
from stad.data.formats.errors import FormatError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error", [FormatError("a.csv", 3, "x1", "not a number"), ConfigError("bad key 'a.b'"),
                                   FileNotFoundError("no such file: v.mp4"), KeyError("no split 'train'")])
def test_input_errors_are_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv("STAD_DEBUG", raising=False)

    def main(argv):
        raise error

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    if isinstance(error, FormatError):
        assert "a.csv: line 3: field 'x1': not a number" in err
    if isinstance(error, KeyError):
        assert err == "error: no split 'train'\n"


def test_debug_reraises_and_bugs_keep_their_traceback(monkeypatch):
    def bad_input(argv):
        raise FormatError("a.csv", 1, None, "broken")

    def bug(argv):
        raise ZeroDivisionError("a bug")

    monkeypatch.setenv("STAD_DEBUG", "1")
    with pytest.raises(FormatError):
        run_cli(bad_input, [])
    monkeypatch.delenv("STAD_DEBUG")
    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [])
    assert run_cli(lambda argv: 0, []) == 0 and run_cli(lambda argv: None, []) == 0


@pytest.mark.parametrize("command", [
    ["-m", "detect.evaluate", "--proposals", "missing.pkl", "--gt", "missing.csv"],
    ["-m", "detect.proposals", "--weights", "checkpoints/toy_person_yolov8n.pt", "--source", "BAD_SOURCE",
     "--annotations", "missing.csv", "--out", "x.pkl"],
    ["-m", "stad.data.validate", "--config", "missing.yaml"],
    ["-m", "stad.data.convert", "acar2ava", "--pkl", "missing.pkl", "--out", "x.csv"],
    ["multi_cap_mAP.py", "-l", "missing.pbtxt", "-g", "missing.csv", "-d", "missing.csv"],
])
def test_clis_print_one_line_for_a_missing_file(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STAD_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    args = [str(ROOT / c) if c.endswith(".py") else c for c in command]
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr and "missing" in proc.stderr


def test_toy_keyframes_read_with_the_ava_convention_name_the_flags(tmp_path):
    (tmp_path / "gt.csv").write_text("toy_000,1,0.1,0.1,0.5,0.9,1,0\n")
    env = {k: v for k, v in os.environ.items() if k != "STAD_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "detect.proposals", "--weights",
                           str(ROOT / "checkpoints" / "toy_person_yolov8n.pt"), "--source", str(tmp_path),
                           "--annotations", "gt.csv", "--out", "p.pkl"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "maps to frame -26969" in proc.stderr and "--dataset toy" in proc.stderr
