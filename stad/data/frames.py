"""Extract frames from videos: ``python -m stad.data.frames VIDEOS_DIR OUT_DIR --fps 30``.

Layout: ``OUT_DIR/<video>/<video>_%06d.jpg``, numbered from 1 (file n shows time (n-1)/fps after
``--start``); ``<video>`` is the file's path relative to ``VIDEOS_DIR`` without extension, so nested
MultiSports folders (``basketball/v_x_c003.mp4``) become ``OUT_DIR/basketball/v_x_c003/v_x_c003_%06d.jpg``.

Runs ffmpeg through ffmpeg-python with the binary shipped by imageio-ffmpeg (no system ffmpeg is
needed), ``--workers`` videos at a time (one ffmpeg thread each). Resumable: each video is extracted
into a temporary folder that is renamed when complete, next to a ``.done.json`` marker; finished
videos are skipped on the next run. A failed video is named in the error, the others still finish.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from stad.cli import run_cli
from stad.data.video import VIDEO_EXTENSIONS
from stad.io_utils import atomic_write_text

log = logging.getLogger("stad.data.frames")
MARKER = ".done.json"


class FrameExtractionError(RuntimeError):
    """ffmpeg failed on a video; the message names it."""


@dataclass(frozen=True)
class ExtractOptions:
    fps: float = 30.0
    quality: int = 2  # ffmpeg -q:v (2 = best JPEG)
    height: int | None = None  # scale to this height (keeps aspect, even width); None = original size
    start: float | None = None  # seconds to skip (AVA: 900)
    duration: float | None = None  # seconds to keep (AVA: 901)
    ext: str = "jpg"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def find_videos(videos_dir: str | Path) -> dict[str, Path]:
    """``video id -> path`` for every video file under ``videos_dir`` (ids are relative paths)."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: videos folder does not exist")
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            found[path.relative_to(root).with_suffix("").as_posix()] = path
    return found


def _marker(path: Path, opts: ExtractOptions) -> dict:
    stat = path.stat()
    return {"source": path.name, "size": stat.st_size, "mtime": int(stat.st_mtime), "fps": opts.fps,
            "quality": opts.quality, "height": opts.height, "start": opts.start, "duration": opts.duration,
            "ext": opts.ext}


def is_done(out_dir: Path, video: str, path: Path, opts: ExtractOptions) -> bool:
    marker = out_dir / video / MARKER
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return {k: v for k, v in saved.items() if k != "frames"} == _marker(path, opts)


def extract_video(video: str, path: Path, out_dir: Path, opts: ExtractOptions) -> int:
    """Extract one video; returns its frame count. Raises `FrameExtractionError` naming the video."""
    import ffmpeg

    final = out_dir / video
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    name = Path(video).name
    stream = ffmpeg.input(str(path), **({"ss": opts.start} if opts.start else {}),
                          **({"t": opts.duration} if opts.duration else {}))
    stream = stream.filter("fps", fps=opts.fps)
    if opts.height:
        stream = stream.filter("scale", -2, opts.height)
    stream = stream.output(str(tmp / f"{name}_%06d.{opts.ext}"), start_number=1, threads=1,
                           **({"q:v": opts.quality} if opts.ext == "jpg" else {}))
    try:
        stream.run(cmd=ffmpeg_exe(), quiet=True, overwrite_output=True)
    except ffmpeg.Error as error:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise FrameExtractionError(f"video {video!r} ({path}): ffmpeg failed: {' | '.join(tail)}") from None
    count = sum(1 for _ in tmp.glob(f"{name}_*.{opts.ext}"))
    if count == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FrameExtractionError(f"video {video!r} ({path}): ffmpeg wrote no frames")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(final / MARKER, json.dumps({**_marker(path, opts), "frames": count}) + "\n")
    return count


def extract_all(videos_dir: str | Path, out_dir: str | Path, opts: ExtractOptions = ExtractOptions(),
                workers: int = 2, progress: bool = True) -> dict[str, int]:
    """Extract every video not yet done; returns ``video -> frames`` for the ones extracted now.

    Raises `FrameExtractionError` listing every failed video after the others have finished.
    """
    out_dir = Path(out_dir)
    videos = find_videos(videos_dir)
    todo = {v: p for v, p in videos.items() if not is_done(out_dir, v, p, opts)}
    log.info("%d videos, %d already extracted, %d to do", len(videos), len(videos) - len(todo), len(todo))
    done: dict[str, int] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(extract_video, v, p, out_dir, opts): v for v, p in todo.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc="frames", unit="video", disable=not progress):
            try:
                done[futures[future]] = future.result()
            except FrameExtractionError as error:
                failures.append(str(error))
                log.error("%s", error)
    if failures:
        raise FrameExtractionError(f"{len(failures)} of {len(todo)} videos failed:\n" + "\n".join(failures))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.data.frames", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="videos extracted in parallel")
    parser.add_argument("--quality", type=int, default=2, help="JPEG quality, ffmpeg -q:v (2 best .. 31)")
    parser.add_argument("--height", type=int, help="scale frames to this height (ACAR: 340)")
    parser.add_argument("--start", type=float, help="seconds to skip first (AVA: 900)")
    parser.add_argument("--duration", type=float, help="seconds to extract (AVA: 901)")
    parser.add_argument("--ext", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    opts = ExtractOptions(args.fps, args.quality, args.height, args.start, args.duration, args.ext)
    try:
        done = extract_all(args.videos_dir, args.out_dir, opts, args.workers)
    except (FrameExtractionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"extracted {len(done)} videos ({sum(done.values())} frames) into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
