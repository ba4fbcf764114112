#!/usr/bin/env bash
# ultralytics depends on the GUI build `opencv-python`, which needs libGL and shadows the headless
# build in the same cv2 namespace. Keep only opencv-python-headless (the version pinned in
# requirements.txt) so `import cv2` works on servers and CI.
set -euo pipefail
PIP=${1:-pip}
version=$(grep -E '^opencv-python-headless==' requirements.txt | cut -d= -f3)
if $PIP show opencv-python >/dev/null 2>&1; then
  $PIP uninstall -q -y opencv-python
  $PIP install -q --disable-pip-version-check --force-reinstall --no-deps "opencv-python-headless==${version}"
fi
