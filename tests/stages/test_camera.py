"""Live sources: files and generators in real time, cameras' listing and their errors.

No camera exists on the test machines: the V4L2 ioctls and FFmpeg's device logs are fed from
recorded driver answers (the device is the boundary we cannot reach); everything else is real."""

from __future__ import annotations

import ctypes
import errno
import time

import numpy as np
import pytest

from swapstream.core.errors import ConfigError, InputError
from swapstream.stages.devices import (
    VIDIOC_ENUM_FMT,
    VIDIOC_ENUM_FRAMEINTERVALS,
    VIDIOC_ENUM_FRAMESIZES,
    Camera,
    Mode,
    describe,
    parse_avfoundation_devices,
    parse_avfoundation_modes,
    parse_dshow_devices,
    parse_dshow_modes,
    v4l2_modes,
)
from swapstream.stages.sources import camera as camera_mod
from swapstream.stages.sources.camera import CameraSource, CaptureSettings, parse_size, resolve
from swapstream.stages.sources.microphone import MicrophoneSource


def fcc(s: str) -> int:
    return sum(ord(c) << (8 * i) for i, c in enumerate(s))


def fake_webcam_ioctl(fd, request, arg):
    """A UVC webcam's answers: MJPG 1280x720/640x480 at 30/15 fps, YUYV 640x480 at 30 fps."""
    table = {fcc("MJPG"): {(1280, 720): [30, 15], (640, 480): [30, 15]}, fcc("YUYV"): {(640, 480): [30]}}
    if request == VIDIOC_ENUM_FMT:
        if arg.index >= len(table):
            raise OSError(errno.EINVAL, "no more")
        arg.pixelformat = list(table)[arg.index]
    elif request == VIDIOC_ENUM_FRAMESIZES:
        sizes = list(table[arg.pixel_format])
        if arg.index >= len(sizes):
            raise OSError(errno.EINVAL, "no more")
        arg.type = 1
        arg.u[0], arg.u[1] = sizes[arg.index]
    elif request == VIDIOC_ENUM_FRAMEINTERVALS:
        rates = table[arg.pixel_format][(arg.width, arg.height)]
        if arg.index >= len(rates):
            raise OSError(errno.EINVAL, "no more")
        arg.type = 1
        arg.u[0], arg.u[1] = 1, rates[arg.index]
    return 0


def test_v4l2_modes_are_read_from_the_driver():
    modes = v4l2_modes(3, ioctl=fake_webcam_ioctl)
    assert [str(m) for m in modes] == ["MJPG 1280x720 @ 30, 15 fps", "MJPG 640x480 @ 30, 15 fps",
                                       "YUYV 640x480 @ 30 fps"]
    assert modes[0].compressed and not modes[2].compressed
    assert ctypes.sizeof(ctypes.c_uint32) == 4  # the structs' layout assumes it


def test_mac_and_windows_device_listings_are_parsed():
    avf = ["[AVFoundation indev @ 0x7f] AVFoundation video devices:",
           "[AVFoundation indev @ 0x7f] [0] FaceTime HD Camera",
           "[AVFoundation indev @ 0x7f] [1] Capture screen 0",
           "[AVFoundation indev @ 0x7f] AVFoundation audio devices:",
           "[AVFoundation indev @ 0x7f] [0] MacBook Pro Microphone"]
    assert parse_avfoundation_devices(avf) == {"video": [(0, "FaceTime HD Camera"), (1, "Capture screen 0")],
                                               "audio": [(0, "MacBook Pro Microphone")]}
    assert [str(m) for m in parse_avfoundation_modes(["  1280x720@[1.000000 30.000000]fps"])] == \
        ["avfoundation 1280x720 @ 30, 1 fps"]
    new = ['[dshow @ 0x1] "Integrated Camera" (video)',
           '[dshow @ 0x1]   Alternative name "@device_pnp_\\\\?\\usb"',
           '[dshow @ 0x1] "Microphone (Realtek Audio)" (audio)']
    old = ["[dshow @ 0x2] DirectShow video devices (some may be both video and audio devices)",
           '[dshow @ 0x2]  "Logitech C920"', "[dshow @ 0x2] DirectShow audio devices", '[dshow @ 0x2]  "Mic"']
    assert parse_dshow_devices(new) == {"video": ["Integrated Camera"],
                                        "audio": ["Microphone (Realtek Audio)"]}
    assert parse_dshow_devices([ln.split("] ", 1)[1] for ln in old]) == {"video": ["Logitech C920"],
                                                                         "audio": ["Mic"]}
    modes = parse_dshow_modes(["[dshow @ 0x1]   vcodec=mjpeg  min s=1280x720 fps=5 max s=1280x720 fps=30"])
    assert [str(m) for m in modes] == ["mjpeg 1280x720 @ 30, 5 fps"]


def test_describe_lists_cameras_and_their_modes():
    cams = [Camera("HD Webcam", "/dev/video0", [Mode("MJPG", 1280, 720, [30.0])], "uvcvideo")]
    assert describe(cams) == ["/dev/video0: HD Webcam [uvcvideo]", "    MJPG 1280x720 @ 30 fps"]
    assert describe([])[0].startswith("no cameras found")


def test_a_size_the_camera_does_not_offer_is_refused_with_the_sizes_it_does(monkeypatch):
    modes = [Mode("MJPG", 1280, 720, [30.0]), Mode("MJPG", 640, 480, [30.0])]
    cams = [Camera("HD Webcam", "/dev/null", modes)]
    src = CameraSource(CaptureSettings("HD Webcam", 1920, 1080), cameras=lambda: cams)
    with pytest.raises(InputError, match=r"does not offer 1920x1080; it offers 1280x720, 640x480"):
        src.open()


def test_a_busy_camera_is_one_line_with_the_fix(monkeypatch):
    def busy(*a, **k):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(camera_mod.av, "open", busy)  # the device answers EBUSY
    with pytest.raises(InputError, match="is busy: another program"):
        CameraSource(CaptureSettings("/dev/null")).open()


def test_no_such_camera_names_the_cameras_there_are():
    cams = [Camera("HD Webcam", "/dev/video0", [])]
    with pytest.raises(InputError, match=r"cameras here: /dev/video0 \(HD Webcam\)"):
        resolve("Studio Cam", cameras=lambda: cams)
    assert resolve("udp://127.0.0.1:1234").kind == "url"
    assert resolve("lavfi:testsrc").format == "lavfi"


def test_sizes_are_parsed():
    assert parse_size("1280x720") == (1280, 720)
    for bad in ("720p", "1280*720", "8x8", ""):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_a_file_plays_in_real_time_and_loops(clips):
    src = CameraSource(CaptureSettings(str(clips["a"]), loop=True, audio=False))
    info = src.open()
    assert (info.width, info.height, info.fps) == (400, 300, 30.0)
    t0 = time.monotonic()
    packets = [p for _, p in zip(range(75), src.packets())]
    took = time.monotonic() - t0
    src.close()
    assert 2.3 < took < 2.8  # 75 frames at 30 fps: real time, across the loop at frame 60
    assert [p.follows for p in packets[58:62]] == [57, 58, None, 60]  # the loop starts tracks afresh
    steps = np.diff([p.capture_time for p in packets])
    assert abs(np.median(steps) - 1 / 30) < 0.002 and np.all(np.diff([p.pts for p in packets]) > 0)
    assert abs(src.measured_fps - 30) < 1


def test_a_file_source_hands_its_audio_over(clips):
    chunks = []
    src = CameraSource(CaptureSettings(str(clips["a"])), on_audio=chunks.append)
    assert src.open().has_audio
    for _ in src.packets():
        pass
    src.close()
    total = sum(c.samples.shape[1] for c in chunks) / 48000
    assert abs(total - 2.0) < 0.1 and chunks[0].samples.dtype == np.float32
    assert np.all(np.diff([c.capture_time for c in chunks]) >= 0)


def test_a_generated_audio_device_is_paced_in_real_time():
    mic = MicrophoneSource("lavfi:sine=frequency=440:sample_rate=48000")
    mic.open()
    t0, n = time.monotonic(), 0
    for chunk in mic.chunks():
        n += chunk.samples.shape[1]
        if n >= 48000:
            break
    mic.close()
    assert 0.9 < time.monotonic() - t0 < 1.2
    with pytest.raises(InputError, match="cannot open this audio device"):
        MicrophoneSource("alsa:nonexistent_card_42").open()
