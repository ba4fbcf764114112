"""No network access: predict and a 1-epoch training run with every socket call trapped.

Runs in a fresh interpreter (ultralytics probes the network at import time) whose environment has
no YOLO_OFFLINE: detect.detector must switch everything off by itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.detect.offline_testutils import NETWORK_TRAP

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = NETWORK_TRAP + textwrap.dedent(r'''
    from pathlib import Path
    import cv2, numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    tmp = Path(sys.argv[2])
    from detect.detector import PersonDetector, build_untrained_detector
    from detect.train import train

    root = tmp / "yolo"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            cv2.rectangle(image, (10 + i, 8), (30 + i, 56), (255, 255, 255), -1)
            cv2.imwrite(str(root / "images" / split / f"v_{i:06d}.jpg"), image)
            (root / "labels" / split / f"v_{i:06d}.txt").write_text(f"0 {(20 + i) / 64:.6f} 0.500000 0.312500 0.750000\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: person\n")

    weights = build_untrained_detector(tmp / "coco.pt", {0: "person", 1: "car"})
    detector = PersonDetector(weights, imgsz=64, conf=0.5)
    image = cv2.imread(str(root / "images" / "val" / "v_000000.jpg"))
    n_ref = len(detector.detect_reference(image))
    n_fast = len(detector.detect([image])[0])
    summary = train(root / "data.yaml", "yolov8n.yaml", epochs=1, imgsz=64, batch=4, device="cpu", workers=0,
                    project=tmp / "runs", name="offline", width=0.0625, depth=0.33, out=tmp / "trained.pt")
    # fine-tuning an existing .pt (the path for official COCO weights) is offline too
    train(root / "data.yaml", str(tmp / "coco.pt"), epochs=1, imgsz=64, batch=4, device="cpu", workers=0,
          project=tmp / "runs", name="finetune", out=tmp / "finetuned.pt")
    assert PersonDetector(tmp / "finetuned.pt", imgsz=64).names == {0: "person"}
    trained = PersonDetector(tmp / "trained.pt", imgsz=64)
    print(json.dumps({"attempts": attempts, "n_ref": n_ref, "n_fast": n_fast, "out": summary["out"],
                      "names": trained.names, "metrics": sorted(summary["metrics"])}))
''')


def test_predict_and_train_never_touch_the_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS"))}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "ultralytics_config")   # fresh config dir: no cached font
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], report["attempts"]
    assert report["n_ref"] == report["n_fast"]
    assert Path(report["out"]).is_file() and report["names"] == {"0": "person"}
    assert "metrics/mAP50(B)" in report["metrics"]
    assert not (tmp_path / "ultralytics_config" / "Arial.ttf").exists()
