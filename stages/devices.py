"""Which cameras a machine has, and the sizes and frame rates each offers.

- Linux: every /dev/videoN that can capture, asked directly through the V4L2 ioctls
  (VIDIOC_QUERYCAP, VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES, VIDIOC_ENUM_FRAMEINTERVALS) - what
  `v4l2-ctl --list-formats-ext` prints, without needing v4l-utils.
- macOS (avfoundation) and Windows (dshow): FFmpeg's own device listing (`list_devices`), read
  from its log; sizes from dshow's `list_options`, or from the modes avfoundation names when a
  size is refused.

A v4l2loopback device (a virtual camera's output end) is listed apart: it is where swapstream
writes, not a camera to read.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import re
import sys
from dataclasses import dataclass, field

# --- V4L2 (linux/videodev2.h) ------------------------------------------------------------------
_CAP_VIDEO_CAPTURE = 0x00000001
_CAP_DEVICE_CAPS = 0x80000000
_BUF_TYPE_VIDEO_CAPTURE = 1
_FRMSIZE_DISCRETE, _FRMIVAL_DISCRETE = 1, 1


class _Capability(ctypes.Structure):
    _fields_ = [("driver", ctypes.c_char * 16), ("card", ctypes.c_char * 32),
                ("bus_info", ctypes.c_char * 32), ("version", ctypes.c_uint32),
                ("capabilities", ctypes.c_uint32), ("device_caps", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32 * 3)]


class _FmtDesc(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("description", ctypes.c_char * 32), ("pixelformat", ctypes.c_uint32),
                ("mbus_code", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 3)]


class _FrmSize(ctypes.Structure):
    # union { discrete {width, height}; stepwise {min_w, max_w, step_w, min_h, max_h, step_h} }
    _fields_ = [("index", ctypes.c_uint32), ("pixel_format", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("u", ctypes.c_uint32 * 6), ("reserved", ctypes.c_uint32 * 2)]


class _FrmIval(ctypes.Structure):
    # union { discrete {numerator, denominator}; stepwise {min, max, step} fractions }
    _fields_ = [("index", ctypes.c_uint32), ("pixel_format", ctypes.c_uint32), ("width", ctypes.c_uint32),
                ("height", ctypes.c_uint32), ("type", ctypes.c_uint32), ("u", ctypes.c_uint32 * 6),
                ("reserved", ctypes.c_uint32 * 2)]


def _iowr(nr: int, size: int, read_only: bool = False) -> int:
    direction = 2 if read_only else 3  # _IOR / _IOWR
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


VIDIOC_QUERYCAP = _iowr(0, ctypes.sizeof(_Capability), read_only=True)
VIDIOC_ENUM_FMT = _iowr(2, ctypes.sizeof(_FmtDesc))
VIDIOC_ENUM_FRAMESIZES = _iowr(74, ctypes.sizeof(_FrmSize))
VIDIOC_ENUM_FRAMEINTERVALS = _iowr(75, ctypes.sizeof(_FrmIval))


def fourcc(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip()


@dataclass
class Mode:
    """One way a camera can deliver frames: pixel format (fourcc or FFmpeg name), size, rates."""

    pixel_format: str
    width: int
    height: int
    fps: list[float] = field(default_factory=list)

    @property
    def compressed(self) -> bool:
        return self.pixel_format.lower() in ("mjpg", "mjpeg", "jpeg", "h264")

    def __str__(self) -> str:
        rates = ", ".join(f"{r:g}" for r in sorted(set(self.fps), reverse=True))
        return f"{self.pixel_format} {self.width}x{self.height}" + (f" @ {rates} fps" if rates else "")


@dataclass
class Camera:
    """A capture device: `spec` is what --camera takes to open it."""

    name: str
    spec: str
    modes: list[Mode] = field(default_factory=list)
    driver: str = ""

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return sorted({(m.width, m.height) for m in self.modes}, reverse=True)

    def offers(self, width: int, height: int) -> bool:
        """Whether the camera names this size (True when it names none: it could not be asked)."""
        return not self.modes or (width, height) in self.sizes


# --- Linux -------------------------------------------------------------------------------------
def _enum(fd: int, request: int, struct, ioctl=fcntl.ioctl):
    """Yield filled copies of `struct` for index 0, 1, ... until the driver says no more."""
    index = 0
    while index < 256:
        s = type(struct).from_buffer_copy(struct)
        s.index = index
        try:
            ioctl(fd, request, s)
        except OSError:
            return
        yield s
        index += 1


def v4l2_modes(fd: int, ioctl=fcntl.ioctl) -> list[Mode]:
    """Every (format, size, rates) a V4L2 capture device offers (discrete sizes; a stepwise
    range is given as its largest size)."""
    modes = []
    for fmt in _enum(fd, VIDIOC_ENUM_FMT, _FmtDesc(type=_BUF_TYPE_VIDEO_CAPTURE), ioctl):
        pixfmt = fmt.pixelformat
        for size in _enum(fd, VIDIOC_ENUM_FRAMESIZES, _FrmSize(pixel_format=pixfmt), ioctl):
            w, h = (size.u[0], size.u[1]) if size.type == _FRMSIZE_DISCRETE else (size.u[1], size.u[4])
            rates = []
            for iv in _enum(fd, VIDIOC_ENUM_FRAMEINTERVALS, _FrmIval(pixel_format=pixfmt, width=w, height=h),
                            ioctl):
                num, den = iv.u[0], iv.u[1]  # discrete, or the stepwise minimum (fastest)
                if num:
                    rates.append(round(den / num, 2))
            modes.append(Mode(fourcc(pixfmt), w, h, rates))
            if size.type != _FRMSIZE_DISCRETE:
                break
    return modes


def v4l2_query(path: str, ioctl=fcntl.ioctl) -> tuple[str, str, bool, list[Mode]]:
    """(card name, driver, can capture, modes) of a V4L2 device; OSError if it cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        cap = _Capability()
        ioctl(fd, VIDIOC_QUERYCAP, cap)
        caps = cap.device_caps if cap.capabilities & _CAP_DEVICE_CAPS else cap.capabilities
        capture = bool(caps & _CAP_VIDEO_CAPTURE)
        modes = v4l2_modes(fd, ioctl) if capture else []
        return cap.card.decode(errors="replace"), cap.driver.decode(errors="replace"), capture, modes
    finally:
        os.close(fd)


def _linux_devices() -> tuple[list[Camera], list[Camera]]:
    cams, loopbacks = [], []
    for path in sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0)):
        try:
            card, driver, capture, modes = v4l2_query(path)
        except OSError:
            continue
        dev = Camera(card, path, modes, driver)
        if "loopback" in driver.lower():
            loopbacks.append(dev)
        elif capture and modes:  # metadata nodes of a UVC camera capture nothing
            cams.append(dev)
    return cams, loopbacks


def loopback_devices() -> list[Camera]:
    """v4l2loopback devices (Linux): where a virtual camera can be written."""
    return _linux_devices()[1] if sys.platform.startswith("linux") else []


# --- macOS / Windows: FFmpeg's listing ----------------------------------------------------------
_AVF_HEADER = re.compile(r"AVFoundation (video|audio) devices:")
_AVF_DEVICE = re.compile(r"^\s*\[(\d+)\]\s+(.+?)\s*$")
_DSHOW_DEVICE = re.compile(r'^\s*"(.+)"\s+\((video|audio|none)\)\s*$')
_DSHOW_HEADER = re.compile(r"DirectShow (video|audio) devices")
_DSHOW_QUOTED = re.compile(r'^\s*"(.+)"\s*$')
_DSHOW_MODE = re.compile(r"(?:vcodec|pixel_format)=(\S+)\s+min s=(\d+)x(\d+) fps=([\d.]+)\s+"
                         r"max s=(\d+)x(\d+) fps=([\d.]+)")
_AVF_MODE = re.compile(r"(\d+)x(\d+)@\[([\d.]+)\s+([\d.]+)\]fps")


_CONTEXT = re.compile(r"^\[[^\]]*@ ?0x[0-9a-fA-F]+\]\s?")  # "[dshow @ 0x55d0] " as FFmpeg prints it


def _bare(lines: list[str]) -> list[str]:
    """Log lines without FFmpeg's "[context @ address]" prefix (the CLI prints it, logs do not)."""
    return [_CONTEXT.sub("", line) for line in lines]


def parse_avfoundation_devices(lines: list[str]) -> dict[str, list[tuple[int, str]]]:
    """{"video": [(index, name)], "audio": [...]} from avfoundation's list_devices log lines."""
    out: dict[str, list[tuple[int, str]]] = {"video": [], "audio": []}
    kind = None
    for line in _bare(lines):
        if m := _AVF_HEADER.search(line):
            kind = m.group(1)
        elif kind and (m := _AVF_DEVICE.search(line)):
            out[kind].append((int(m.group(1)), m.group(2)))
    return out


def parse_dshow_devices(lines: list[str]) -> dict[str, list[str]]:
    """{"video": [names], "audio": [names]} from dshow's list_devices log lines (both the newer
    `"name" (video)` form and the older form under a "DirectShow video devices" header)."""
    out: dict[str, list[str]] = {"video": [], "audio": []}
    kind = None
    for line in _bare(lines):
        if "Alternative name" in line:
            continue
        if m := _DSHOW_DEVICE.match(line):
            if m.group(2) in out:
                out[m.group(2)].append(m.group(1))
        elif m := _DSHOW_HEADER.search(line):
            kind = m.group(1)
        elif kind and (m := _DSHOW_QUOTED.match(line)):
            out[kind].append(m.group(1))
    return out


def parse_dshow_modes(lines: list[str]) -> list[Mode]:
    modes = []
    for line in lines:
        if m := _DSHOW_MODE.search(line):
            fmt, w, h, lo, w2, h2, hi = m.groups()
            modes.append(Mode(fmt, int(w2), int(h2), sorted({float(lo), float(hi)})))
    return modes


def parse_avfoundation_modes(lines: list[str]) -> list[Mode]:
    """Modes from the "Supported modes:" lines avfoundation logs when a size/rate is refused."""
    return [Mode("avfoundation", int(m.group(1)), int(m.group(2)),
                 sorted({float(m.group(3)), float(m.group(4))}))
            for line in lines if (m := _AVF_MODE.search(line))]


def ffmpeg_log(url: str, fmt: str, options: dict) -> list[str]:
    """What FFmpeg logs while trying to open `url` with `fmt` and `options` (the open may fail:
    listing devices is done by a failing open)."""
    import av
    import av.logging

    old = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture() as logs:
            try:
                av.open(url, format=fmt, options=options, timeout=5).close()
            except (av.FFmpegError, OSError):
                pass
    finally:
        av.logging.set_level(old)
    return [msg for _, _, msg in logs for msg in str(msg).splitlines()]


def _mac_devices() -> list[Camera]:
    found = parse_avfoundation_devices(ffmpeg_log("", "avfoundation", {"list_devices": "true"}))
    return [Camera(name, str(i)) for i, name in found["video"]]


def _windows_devices() -> list[Camera]:
    names = parse_dshow_devices(ffmpeg_log("dummy", "dshow", {"list_devices": "true"}))["video"]
    return [Camera(n, n, parse_dshow_modes(ffmpeg_log(f"video={n}", "dshow", {"list_options": "true"})))
            for n in names]


def list_cameras() -> list[Camera]:
    """The capture devices of this machine, each with the modes it offers where it says."""
    if sys.platform.startswith("linux"):
        return _linux_devices()[0]
    if sys.platform == "darwin":
        return _mac_devices()
    if sys.platform == "win32":
        return _windows_devices()
    return []


def describe(cameras: list[Camera]) -> list[str]:
    """Lines for `swapstream live --list-cameras`."""
    if not cameras:
        linux = sys.platform.startswith("linux")
        return ["no cameras found" + (" (no /dev/video* device can capture)" if linux else "")]
    out = []
    for c in cameras:
        out.append(f"{c.spec}: {c.name}" + (f" [{c.driver}]" if c.driver else ""))
        for m in c.modes:
            out.append(f"    {m}")
    return out
