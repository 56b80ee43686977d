"""The web page output (--serve): a real WebSink, fed real frames from a thread as the live runner
would, watched by a real headless Chromium over WebRTC."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from fractions import Fraction

import cv2
import numpy as np
import pytest

from swapstream.core.audio import AudioChunk
from swapstream.core.errors import OutputError
from swapstream.core.packet import FramePacket
from swapstream.stages.sinks.controls import Controls
from swapstream.stages.sinks.web import WebSettings, WebSink
from tests.browser import chromium, require_chromium

W, H = 640, 480
SMALL = (160, 120)  # the page's pixels are compared at this size: codec noise averages out
PLAYING = """() => { const v = document.getElementById('video');
                     return v.videoWidth > 0 && v.currentTime > 0.2 && !v.paused; }"""
GRAB = f"""() => {{ const v = document.getElementById('video'), c = document.createElement('canvas');
                   c.width = {SMALL[0]}; c.height = {SMALL[1]};
                   const g = c.getContext('2d'); g.drawImage(v, 0, 0, c.width, c.height);
                   const px = g.getImageData(0, 0, c.width, c.height).data;
                   let s = ''; for (let i = 0; i < px.length; i++) s += String.fromCharCode(px[i]);
                   return btoa(s); }}"""  # RGBA as base64: a long JSON array would take a second


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """Two (480, 640, 3) uint8 RGB frames a screenshot tells apart: a face, and another face inverted."""
    from swapstream.pipeline.samples import render_frames

    a = next(render_frames(["astronaut"], 1, W, H, 0.6))
    b = 255 - next(render_frames(["grace_hopper"], 1, W, H, 0.6, seed=3))
    return a, np.ascontiguousarray(b)


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium() as b:
        yield b


class Feeder(threading.Thread):
    """Calls sink.process() ~30 times a second with `image` (and, with audio, a 440 Hz tone in
    20 ms AudioChunks), timing each process() call."""

    def __init__(self, sink: WebSink, image: np.ndarray, audio: bool = False) -> None:
        super().__init__(daemon=True)
        self.sink, self.image, self.with_audio = sink, image, audio
        self.times: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = next_video = next_audio = time.monotonic()
        i = sent = 0
        while not self.done.is_set():
            now = time.monotonic()
            if now >= next_video:
                t = time.perf_counter()
                self.sink.process([FramePacket(i, None, Fraction(1, 30), self.image, capture_time=now)])
                self.times.append(time.perf_counter() - t)
                i, next_video = i + 1, start + (i + 1) / 30
            if self.with_audio and now >= next_audio:
                n = np.arange(sent, sent + 960)
                tone = (0.5 * np.sin(2 * np.pi * 440 * n / 48000)).astype(np.float32)[None]
                self.sink.audio(AudioChunk(tone, 48000, now))
                sent, next_audio = sent + 960, start + (sent + 960) / 48000
            time.sleep(0.004)


@contextmanager
def serving(image: np.ndarray, host: str = "127.0.0.1", audio: bool = False, controls: Controls | None = None,
            snapshot=None):
    sink = WebSink(WebSettings(host, 0, audio=audio), controls or Controls(), snapshot or (lambda: {}))
    sink.setup()
    feeder = Feeder(sink, image, audio)
    feeder.start()
    try:
        yield sink, feeder
    finally:
        feeder.done.set()
        feeder.join()
        sink.close()


def local(sink: WebSink, path: str = "/") -> str:
    return f"http://127.0.0.1:{sink.port}{path}"


def request(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {**({"Content-Type": "application/json"} if data else {}),
                                             **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def shown(page) -> np.ndarray:
    """The page's video as (120, 160, 3) uint8 RGB."""
    rgba = np.frombuffer(base64.b64decode(page.evaluate(GRAB)), np.uint8)
    return rgba.reshape(SMALL[1], SMALL[0], 4)[..., :3]


def mad(page_px: np.ndarray, image: np.ndarray) -> float:
    small = cv2.resize(image, SMALL, interpolation=cv2.INTER_AREA)
    return float(np.abs(page_px.astype(np.float32) - small).mean())


def wait_showing(page, image: np.ndarray, timeout: float = 8.0) -> float:
    """Waits until the page shows `image` (mean difference under 20 grey levels); the last difference."""
    deadline = time.monotonic() + timeout
    while True:
        d = mad(shown(page), image)
        if d < 20 or time.monotonic() > deadline:
            return d
        time.sleep(0.2)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1100, "height": 650})
    page.goto(url)
    page.wait_for_function(PLAYING, timeout=15000)
    return page


def wait_text(page, selector: str, text: str, timeout_ms: int = 3000) -> None:
    page.wait_for_function("([sel, text]) => document.querySelector(sel).textContent === text",
                           arg=[selector, text], timeout=timeout_ms)


def wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
def test_page_plays_the_fed_video(browser, images):
    a, b = images
    with serving(a) as (sink, feeder):
        assert sink.url == f"http://127.0.0.1:{sink.port}/"
        page = open_page(browser, sink.url)
        assert page.title() == "swapstream live"
        assert page.evaluate("() => [document.getElementById('video').videoWidth, "
                             "document.getElementById('video').videoHeight]") == [W, H]
        t0 = page.evaluate("() => document.getElementById('video').currentTime")
        d_a = wait_showing(page, a)
        assert d_a < 20, f"the page shows something else than the fed frame (mean difference {d_a:.1f})"
        assert mad(shown(page), b) > 3 * d_a + 30
        feeder.image = b
        d_b = wait_showing(page, b)
        assert d_b < 20, f"the page did not follow the new frame (mean difference {d_b:.1f})"
        assert mad(shown(page), a) > 3 * d_b + 30
        assert page.evaluate("() => document.getElementById('video').currentTime") > t0
        page.close()


@pytest.mark.slow
def test_statistics_update(browser, images):
    calls = iter(range(10**6))

    def snapshot() -> dict:
        k = next(calls)
        return {"fps_in": 30.0, "fps_out": 29.0, "latency_ms": {"p50": 40.0 + k, "p95": float("nan")},
                "dropped": k, "faces": 1, "captured": 30 * k, "seconds": k / 2, "stages_ms": {}}

    with serving(images[0], snapshot=snapshot) as (sink, _):
        page = browser.new_page()
        page.goto(sink.url)
        page.wait_for_function("() => document.getElementById('dropped').textContent !== '–'", timeout=5000)
        first = page.inner_text("#stats")
        time.sleep(1.3)
        later = page.inner_text("#stats")
        assert first != later
        assert page.inner_text("#fps") == "30.0 / 29.0"
        assert page.inner_text("#faces") == "1"
        assert int(page.inner_text("#dropped")) >= 2  # polled about twice a second
        assert page.inner_text("#latency").endswith("/ – ms")  # NaN arrives as null, shown as a dash
        status, body = request(local(sink, "/stats"))
        stats = json.loads(body)
        assert status == 200 and stats["latency_ms"]["p95"] is None
        assert stats["controls"]["swap"] is True and stats["audio"] is False
        page.close()


@pytest.mark.slow
def test_controls_change_the_real_state(browser, images):
    controls = Controls()
    with serving(images[0], controls=controls) as (sink, _):
        page = browser.new_page()
        page.goto(sink.url)
        wait_text(page, "#swap .value", "on", 5000)
        page.click("#swap")
        assert wait_for(lambda: controls.state()["swap"] is False)
        wait_text(page, "#swap .value", "off")
        assert page.get_attribute("#swap", "aria-pressed") == "false"
        page.keyboard.press("d")
        assert wait_for(lambda: controls.state()["direction"] == "b2a")
        wait_text(page, "#direction .value", "B → A")
        controls.act("boxes")  # changed elsewhere (the window's keys): the page shows it on its next poll
        wait_text(page, "#boxes .value", "on")
        assert request(local(sink, "/control"), {"action": "explode"})[0] == 400
        assert request(local(sink, "/control"), {"action": "direction", "value": "up"})[0] == 400
        status, body = request(local(sink, "/control"), {"action": "overlay", "value": False})
        assert status == 200 and json.loads(body)["overlay"] is False
        page.keyboard.press("q")
        assert wait_for(lambda: controls.quit.is_set())
        wait_text(page, "#status", "ended")
        page.close()


async def _aiortc_offer() -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    await pc.close()
    return offer


@pytest.mark.slow
def test_a_public_address_needs_the_token(browser, images):
    controls = Controls()
    with serving(images[0], host="0.0.0.0", controls=controls) as (sink, _):
        token = sink.token
        assert token and len(token) >= 20 and sink.url.endswith(f":{sink.port}/?token={token}")
        with ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
            offer = pool.submit(asyncio.run, _aiortc_offer()).result()
        asks = [("/", None), ("/stats", None), ("/offer", offer), ("/control", {"action": "overlay"})]
        for path, body in asks:
            assert request(local(sink, path), body)[0] == 403, path
            assert request(local(sink, path + "?token=wrong"), body)[0] == 403, path
            assert request(local(sink, path), body, {"X-Swapstream-Token": token[:-1]})[0] == 403, path
        for path, body in asks:
            assert request(local(sink, f"{path}?token={token}"), body)[0] == 200, path
        assert request(local(sink, "/stats"), None, {"X-Swapstream-Token": token})[0] == 200
        assert request(local(sink, f"/offer?token={token}"), {"sdp": "nonsense", "type": "offer"})[0] == 400
        assert controls.state()["overlay"] is False
        page = open_page(browser, sink.url)  # the printed URL, this machine's address and the token
        page.wait_for_function("() => document.getElementById('viewers').textContent !== '–'", timeout=5000)
        page.click("#overlay")
        assert wait_for(lambda: controls.state()["overlay"] is True)
        page.close()


@pytest.mark.slow
def test_a_viewer_leaving_disturbs_nobody(browser, images):
    a, b = images
    with serving(a) as (sink, feeder):
        stay, leave = open_page(browser, sink.url), open_page(browser, sink.url)
        assert wait_for(lambda: len(sink._viewers.peers) == 2)
        feeder.times.clear()  # from here on: one viewer leaves, the other goes on
        leave.close()
        assert wait_for(lambda: len(sink._viewers.peers) == 1), "the server kept the closed page's connection"
        t0 = stay.evaluate("() => document.getElementById('video').currentTime")
        feeder.image = b
        d = wait_showing(stay, b)
        assert d < 20, f"the remaining viewer stopped following (mean difference {d:.1f})"
        stay.wait_for_function("t0 => document.getElementById('video').currentTime > t0 + 0.5", arg=t0,
                               timeout=3000)
        assert wait_for(lambda: len(feeder.times) >= 60)
        # process() hands the frame over and returns: never waits for a viewer. (On a busy 2-core
        # machine a call may still wait a few ms for the GIL or a CPU, hence the loose maximum.)
        times = np.array(feeder.times) * 1000
        assert np.median(times) < 1.0 and np.percentile(times, 90) < 5 and times.max() < 100, \
            f"process() took {np.median(times):.2f} ms median, {np.percentile(times, 90):.1f} ms p90, " \
            f"{times.max():.1f} ms at most"
        stay.close()


def test_a_port_in_use_is_one_line_naming_it():
    first = WebSink(WebSettings("127.0.0.1", 0), Controls(), dict)
    first.setup()
    try:
        second = WebSink(WebSettings("127.0.0.1", first.port), Controls(), dict)
        with pytest.raises(OutputError, match=f"port {first.port} is in use") as err:
            second.setup()
        assert "\n" not in str(err.value) and "--serve" in str(err.value)
        second.close()
    finally:
        first.close()
        first.close()  # idempotent


def test_loopback_needs_no_token_but_a_loopback_host(images):
    with serving(images[0]) as (sink, _):
        assert sink.token is None
        status, body = request(local(sink))
        assert status == 200 and b"<title>swapstream live</title>" in body
        assert request(local(sink), None, {"Host": f"localhost:{sink.port}"})[0] == 200
        assert request(local(sink, "/stats"), None, {"Host": f"attacker.example:{sink.port}"})[0] == 403
        req = urllib.request.Request(local(sink, "/control"), b'{"action": "quit"}',
                                     {"Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as err:  # a cross-site form cannot send JSON
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 415


@pytest.mark.slow
def test_audio_reaches_the_page(browser, images):
    with serving(images[0], audio=True) as (sink, _):
        page = open_page(browser, sink.url)
        page.wait_for_function("() => { const s = document.getElementById('video').srcObject;"
                               " return s && s.getAudioTracks().length > 0"
                               " && s.getAudioTracks()[0].readyState === 'live'; }", timeout=5000)
        page.click("#sound")
        assert page.evaluate("() => document.getElementById('video').muted") is False
        peak_hz, level = page.evaluate("""async () => {
            const ctx = new AudioContext(); await ctx.resume();
            const an = ctx.createAnalyser(); an.fftSize = 4096;
            ctx.createMediaStreamSource(document.getElementById('video').srcObject).connect(an);
            const spec = new Float32Array(an.frequencyBinCount), wave = new Float32Array(an.fftSize);
            let level = 0, best = [-Infinity, 0];
            for (let i = 0; i < 30; i++) {
              await new Promise((r) => setTimeout(r, 100));
              an.getFloatTimeDomainData(wave); an.getFloatFrequencyData(spec);
              level = Math.max(level, ...wave.map(Math.abs));
              spec.forEach((db, k) => { if (db > best[0]) best = [db, k * ctx.sampleRate / an.fftSize]; });
            }
            return [best[1], level]; }""")
        assert level > 0.05, "the page's audio is silent"
        assert abs(peak_hz - 440) < 30, f"the page's audio peaks at {peak_hz:.0f} Hz, not 440"
        page.close()


def raw(port: int, head: bytes, body: bytes = b"") -> int:
    """The status of a request sent as raw bytes (headers urllib would refuse to send)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


async def _offer_with(videos: int, audios: int = 0) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(videos):
        pc.addTransceiver("video", direction="recvonly")
    for _ in range(audios):
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    await pc.close()
    return offer


def test_malformed_requests_get_400_and_one_log_line(images, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="swapstream.web")
    controls = Controls()
    with serving(images[0], host="0.0.0.0", controls=controls) as (sink, _):
        token, port = sink.token, sink.port
        lines = len([r for r in caplog.records if r.name == "swapstream.web"])
        # a non-ASCII token header (was a 500 and a traceback)
        non_ascii = b"X-Swapstream-Token: \xc3\xa9t\xc3\xa9\r\n"
        assert raw(port, b"GET /stats HTTP/1.1\r\nHost: x\r\n" + non_ascii) == 400
        # 100000 '[' (was a RecursionError traceback)
        head = (f"POST /control?token={token} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\n").encode()
        assert raw(port, head, b"[" * 100000) == 400
        # "false" is not false: swap stays on
        for value in ("false", 0, "off", [], None):
            status, _ = request(local(sink, f"/control?token={token}"), {"action": "swap", "value": value})
            if value is None:
                assert status == 200 and controls.state()["swap"] is False  # no value: toggles
                controls.act("swap", True)
            else:
                assert status == 400, value
                assert controls.state()["swap"] is True, value
        logged = [r for r in caplog.records if r.name == "swapstream.web"][lines:]
        assert len([r for r in logged if "400" in r.getMessage()]) == 2, [r.getMessage() for r in logged]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
            [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_malformed_host_header_on_a_loopback_server_gets_400(images, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="swapstream.web")
    with serving(images[0]) as (sink, _):  # loopback: the Host header is checked
        for host in (b"[zz]", b"[::1"):
            assert raw(sink.port, b"GET /stats HTTP/1.1\r\nHost: " + host + b"\r\n") == 400, host
        assert raw(sink.port, b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n") == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_offer_with_several_video_sections_gets_no_tracks(images):
    with serving(images[0]) as (sink, _):
        with ThreadPoolExecutor(1) as pool:
            twelve = pool.submit(asyncio.run, _offer_with(12)).result()
            two_audio = pool.submit(asyncio.run, _offer_with(1, 2)).result()
        status, body = request(local(sink, "/offer"), twelve)
        assert status == 400 and b"12 video tracks" in body
        assert request(local(sink, "/offer"), two_audio)[0] == 400
        assert len(sink._viewers.peers) == 0 and sink._hub.viewers == 0


def test_a_cross_site_bye_cannot_disconnect_a_viewer(images):
    with serving(images[0]) as (sink, _):
        with ThreadPoolExecutor(1) as pool:
            offer = pool.submit(asyncio.run, _offer_with(1)).result()
        status, body = request(local(sink, "/offer"), offer)
        assert status == 200
        pid = json.loads(body)["id"]
        assert len(pid) >= 16 and pid != "v1"  # unguessable
        for forged in (f"/bye?id={pid}", "/bye?id=v1"):  # what a cross-site form can send: text/plain
            req = urllib.request.Request(local(sink, forged), b"x", {"Content-Type": "text/plain"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert err.value.code == 415
        assert request(local(sink, "/bye"), {"id": "v1"})[0] == 204  # a guess drops nobody
        assert len(sink._viewers.peers) == 1
        assert request(local(sink, "/bye"), {"id": pid})[0] == 204  # the page's own bye does
        assert wait_for(lambda: len(sink._viewers.peers) == 0)


async def _offer_preferring(codec: str) -> dict:
    """An aiortc viewer's offer (one video receiver) that lists `codec` ("vp8" or "h264") first."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    t = pc.addTransceiver("video", direction="recvonly")
    codecs = RTCRtpReceiver.getCapabilities("video").codecs
    t.setCodecPreferences([c for c in codecs if c.mimeType.lower() == f"video/{codec}"])
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    await pc.close()
    return offer


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_a_viewer_gets_the_quick_encoder_of_its_codec_and_its_pictures_decode(images, codec):
    """The answer gives the viewer's video sender our lighter encoder for the codec negotiated
    (aiortc's own: VP8 at speed 6 with a denoiser, x264 at `medium`); what it encodes, from the
    yuv420p frames the track now hands over, decodes back to the picture sent."""
    import av

    from swapstream.stages.sinks.webrtc_codecs import QuickH264Encoder, QuickVp8Encoder, to_i420

    with serving(images[0]) as (sink, _):
        with ThreadPoolExecutor(1) as pool:
            offer = pool.submit(asyncio.run, _offer_preferring(codec)).result()
        status, body = request(local(sink, "/offer"), offer)
        assert status == 200, body
        assert f"{codec.upper() if codec == 'h264' else 'VP8'}/90000" in json.loads(body)["sdp"]
        (pc,) = sink._viewers.peers.values()
        (video,) = [t for t in pc.getTransceivers() if t.kind == "video"]
        encoder = video.sender._RTCRtpSender__encoder
    assert type(encoder) is {"vp8": QuickVp8Encoder, "h264": QuickH264Encoder}[codec]

    frame = cv2.resize(images[0], (320, 240))
    decoder = av.CodecContext.create(codec, "r")  # FFmpeg's own decoders: they flag key frames
    decoded, contexts = [], []

    def send(i: int, keyframe: bool = False) -> None:
        vf = to_i420(frame)
        assert vf.format.name == "yuv420p"
        vf.pts, vf.time_base = i * 3000, Fraction(1, 90000)
        payloads, _ = encoder.encode(vf, keyframe)
        assert payloads
        contexts.append(encoder.codec)
        decoded.extend(decoder.decode(av.Packet(b"".join(_depayload(codec, p) for p in payloads))))

    for i in range(3):
        send(i)
    assert decoded and contexts[0] is contexts[1] is contexts[2]  # aiortc kept the context made here
    send(3)
    send(4, keyframe=True)  # a keyframe request (the page's PLI) still gives one
    assert decoded[-1].key_frame and not decoded[-2].key_frame
    encoder.target_bitrate = encoder.codec.bit_rate // 2  # a bandwidth report: a new context, made here
    send(5)
    assert contexts[-1] is not contexts[-2] and type(encoder) in (QuickVp8Encoder, QuickH264Encoder)
    assert encoder.codec.bit_rate == encoder.target_bitrate
    back = decoded[-1].to_ndarray(format="rgb24").astype(np.float32)
    assert np.abs(back - frame).mean() < 6.0  # the picture, not a grey or green frame
    odd = to_i420(np.zeros((241, 321, 3), np.uint8))  # 4:2:0 cannot halve it: rgb24 for swscale
    assert odd.format.name == "rgb24" and (odd.width, odd.height) == (321, 241)


def _depayload(codec: str, payload: bytes) -> bytes:
    """The codec bitstream of one RTP payload (aiortc's own depacketizers)."""
    if codec == "vp8":
        from aiortc.codecs.vpx import vp8_depayload

        return vp8_depayload(payload)
    from aiortc.codecs.h264 import H264PayloadDescriptor

    return H264PayloadDescriptor.parse(payload)[1]


def test_the_start_bitrate_goes_on_every_vp8_and_h264_format_of_the_video_only():
    from swapstream.stages.sinks.webrtc_codecs import with_start_bitrate

    sdp = "\r\n".join(["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2",
                       "a=fmtp:111 minptime=10", "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99",
                       "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
                       "a=rtpmap:99 H264/90000", "a=fmtp:99 packetization-mode=1", ""])
    lines = with_start_bitrate(sdp, 922).split("\r\n")
    assert "a=fmtp:97 x-google-start-bitrate=922" in lines  # VP8 had no fmtp line: one is added
    assert "a=fmtp:99 packetization-mode=1;x-google-start-bitrate=922" in lines
    assert "a=fmtp:98 apt=97" in lines and "a=fmtp:111 minptime=10" in lines  # rtx, audio untouched
    assert lines.index("a=fmtp:97 x-google-start-bitrate=922") == lines.index("a=rtpmap:97 VP8/90000") + 1
    # each section on its own: an audio format of the same number keeps its line; a second video
    # section gets its own
    shared = "\r\n".join(["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 97", "a=rtpmap:97 opus/48000/2",
                           "a=fmtp:97 minptime=10", "m=video 9 UDP/TLS/RTP/SAVPF 97", "a=rtpmap:97 VP8/90000",
                           "m=video 9 UDP/TLS/RTP/SAVPF 97", "a=rtpmap:97 VP8/90000", ""])
    lines = with_start_bitrate(shared, 500).split("\r\n")
    assert "a=fmtp:97 minptime=10" in lines
    assert lines.count("a=fmtp:97 x-google-start-bitrate=500") == 2 and lines[-1] == ""
