"""The two video decoders give the same frame for the same index on an H.264 file with B-frames.

detect/source.py reads keyframes with OpenCV (sequential grab), stad/data/video.py reads clips with
PyAV (seek + decode). Both sit on FFmpeg; B-frames reorder packets, so a decoder that counted
packets instead of presentation order would return a neighbouring frame.
"""
from pathlib import Path

import av
import numpy as np
import pytest

from detect.keyframes import KeyframeRequest
from detect.source import VideoSource
from stad.data.video import VideoFileSource

FRAMES, WIDTH, HEIGHT = 48, 64, 48


def _frame(index: int) -> np.ndarray:
    """A frame whose index is written as 6 bars of binary brightness (robust to lossy coding)."""
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    for bit in range(6):
        if index >> bit & 1:
            image[:, bit * 10:(bit + 1) * 10] = 215
    image[:, 60:] = (index * 5) % 256  # a smooth ramp as a second witness
    return image


def _index_of(image: np.ndarray) -> int:
    bars = image[8:40, :60, 1].reshape(32, 6, 10).mean(axis=(0, 2))
    return int(sum(1 << bit for bit in range(6) if bars[bit] > 128))


@pytest.fixture(scope="module")
def bframe_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bframes") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"bf": "3", "g": "12", "crf": "10", "threads": "1"}
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(_frame(i)[:, :, ::-1].copy(), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:  # the file really has B-frames
        types = {int(frame.pict_type) for frame in container.decode(video=0)}
    assert 3 in types, types  # FFmpeg's AV_PICTURE_TYPE_B
    return path


def test_opencv_and_pyav_decode_the_same_frame_for_each_index(bframe_video):
    wanted = [1, 2, 5, 12, 13, 20, 31, 47, 48]  # 1-based frame numbers, across GOP boundaries
    requests = [KeyframeRequest("clip", n, n, None, "") for n in wanted]
    by_cv2 = {request.frame: image for request, image in VideoSource(bframe_video).iter_frames(requests)}
    source = VideoFileSource(bframe_video.parent)
    try:
        by_av = dict(zip(wanted, source.read_frames("clip", "", wanted)))
        out_of_order = dict(zip(wanted[::-1], source.read_frames("clip", "", wanted[::-1])))  # seeks back
    finally:
        source.close()
    for n in wanted:
        assert _index_of(by_cv2[n]) == n - 1 and _index_of(by_av[n]) == n - 1, n
        assert by_cv2[n].shape == by_av[n].shape == (HEIGHT, WIDTH, 3)
        # same FFmpeg decode; only the YUV->BGR conversion may round differently
        assert np.abs(by_cv2[n].astype(int) - by_av[n].astype(int)).mean() < 2.0, n
        np.testing.assert_array_equal(out_of_order[n], by_av[n])
