"""Hardware video codecs through PyAV: NVENC/QSV/VAAPI/AMF/VideoToolbox encoders and hardware
decoding (decode.hwaccel). Each is probed before a run starts, so a machine without the device
gets one line naming what is missing and the software fallback, not an error mid-run."""

from __future__ import annotations

from fractions import Fraction

import av

from swapstream.core.errors import ConfigError

HW_SUFFIXES = ("_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox", "_mf")
NEEDS = {"nvenc": "an NVIDIA GPU and driver", "cuda": "an NVIDIA GPU and driver", "qsv": "an Intel GPU",
         "vaapi": "a VA-API GPU (/dev/dri)", "amf": "an AMD GPU", "videotoolbox": "macOS"}
# x264 presets -> NVENC's p1 (fastest) .. p7 (best)
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p4", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7"}


def is_hardware_encoder(codec: str) -> bool:
    return codec.endswith(HW_SUFFIXES)


def _need(name: str) -> str:
    return next((v for k, v in NEEDS.items() if k in name), "its hardware")


def check_codec(codec: str) -> None:
    """ConfigError unless `codec` is a video encoder of this FFmpeg that opens here."""
    try:
        is_video = av.Codec(codec, "w").type == "video"
    except ValueError:  # UnknownCodecError
        is_video = False
    if not is_video:
        raise ConfigError(f"encode codec {codec!r} is not a video encoder in this FFmpeg; use libx264")
    if is_hardware_encoder(codec):
        probe_encoder(codec)


def probe_encoder(codec: str) -> None:
    """ConfigError unless hardware encoder `codec` opens here (a tiny 256x144 context)."""
    try:
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 144, "yuv420p", Fraction(1, 30)
        cc.open()
    except (av.FFmpegError, OSError, ValueError) as err:
        raise ConfigError(f"encode codec {codec!r} cannot open here ({type(err).__name__}: {err}); it "
                          f"needs {_need(codec)}. Use encode.codec: libx264") from None


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """The quality options of an encoder in x264's terms (crf, preset)."""
    if codec in ("libx264", "libx265"):
        return {"crf": str(crf), "preset": preset}
    if codec.endswith("_nvenc"):
        return {"rc": "vbr", "cq": str(crf), "preset": NVENC_PRESETS.get(preset, "p4")}
    return {}


def hwaccel(kind: str):
    """av HWAccel for decode.hwaccel `kind` (none/empty: None); ConfigError when the FFmpeg
    build has no such device type."""
    if not kind or kind == "none":
        return None
    from av.codec.hwaccel import HWAccel, hwdevices_available

    have = hwdevices_available()
    if kind not in have:
        raise ConfigError(f"decode.hwaccel {kind!r} is not in this FFmpeg build (it has: "
                          f"{', '.join(have) or 'none'}); set decode.hwaccel: none")
    return HWAccel(device_type=kind, allow_software_fallback=False)


def hwaccel_error(kind: str, err: Exception) -> ConfigError:
    return ConfigError(f"decode.hwaccel {kind!r} cannot decode here ({type(err).__name__}: {err}); it needs "
                       f"{_need(kind)}. Set decode.hwaccel: none")
