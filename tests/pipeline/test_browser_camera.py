"""`swapstream live --camera browser`: the page's camera, swapped and sent back on the same
connection, in a real headless Chromium whose fake camera plays a real face clip (.y4m)."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.browser import write_y4m
from swapstream.pipeline.config import LiveConfig, SwapSection
from swapstream.pipeline.live import live
from swapstream.pipeline.samples import render_frames
from tests.collect import CollectSink
from tests.pipeline.test_live import face_box, inner

W, H = 640, 480


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """The astronaut (identity a), still, as the browser's camera: 1 s, looped by Chromium."""
    return write_y4m([still()] * 30, tmp_path_factory.mktemp("y4m") / "astronaut.y4m", 30)


def still() -> np.ndarray:
    return next(render_frames(["astronaut"], 1, W, H, 0.6, seed=3))


def fake_camera(clip: Path) -> tuple[str, ...]:
    return ("--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}")


class Session:
    """A live session with --camera browser on a background thread; `url` once it serves."""

    def __init__(self, cfg: LiveConfig, sink: CollectSink | None = None) -> None:
        self.lines: list[str] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(cfg, [sink] if sink else None), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.url and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.1)
        assert self.url, (self.lines, self.errors)

    def _run(self, cfg, sinks) -> None:
        try:
            live(cfg, self.lines.append, sinks)
        except BaseException as err:  # noqa: BLE001 - the test reads it
            self.errors.append(err)

    @property
    def url(self) -> str | None:
        return next((ln.split(" at ", 1)[1] for ln in self.lines if ln.startswith("live: web at ")), None)

    def stats(self) -> dict:
        return self._call("stats")

    def quit(self) -> None:
        self._call("control", {"action": "quit"})
        self.thread.join(timeout=20)

    def _call(self, path: str, body: dict | None = None) -> dict:
        ctx = ssl._create_unverified_context() if self.url.startswith("https") else None
        base, _, query = self.url.partition("?")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{base}{path}?{query}", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return json.loads(r.read())

    def wait(self, what, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.25)
        return what()


def returned_frame(page) -> np.ndarray:
    """The page's main video (the swapped frames that came back) as (H, W, 3) uint8 RGB."""
    data = page.evaluate("""() => { const v = document.getElementById('video');
        const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)]; }""")
    w, h, px = data
    return np.array(px, np.uint8).reshape(h, w, 4)[..., :3]


def test_the_page_camera_comes_back_swapped_one_sender_at_a_time(model_dir, camera_clip, tmp_path):
    """The page sends its (fake) camera, the server swaps each frame and sends it back on the same
    connection: what the page shows is the pipeline's swapped frame, not the camera's. A second
    page is told "busy" and watches; closing the sender frees the seat within seconds; quitting
    keeps the recording playable."""
    from tests.browser import chromium, require_chromium

    require_chromium()
    rec = tmp_path / "rec.mp4"
    sink = CollectSink(keep_frames=1)
    cfg = LiveConfig(swap=SwapSection(model=str(model_dir)), camera="browser", size=f"{W}x{H}",
                     outputs={"serve": "127.0.0.1:0", "record": str(rec)}, duration=90)
    s = Session(cfg, sink)
    assert any("waiting for a page to send its camera" in ln for ln in s.lines), s.lines
    with chromium(fake_camera(camera_clip)) as browser:
        sender = browser.new_page()
        sender.goto(s.url)
        sender.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30000)
        stats = s.wait(lambda: (st := s.stats())["camera"]["received"] > 30 and st)
        assert stats["camera"]["busy"] and stats["camera"]["width"] == W, stats
        assert sender.evaluate("document.getElementById('camera').getAttribute('aria-pressed')") == "true"
        assert sink.deliveries[-1].swapped >= 1, sink.deliveries[-1]  # the page's face was found and swapped

        # the page shows what the pipeline made of its camera: the swapped frame
        time.sleep(1.0)
        shown = returned_frame(sender)
        assert shown.shape == (H, W, 3), shown.shape
        swapped, camera = sink.frames[-1][1], still()
        box = face_box(camera)
        d_swapped = np.abs(inner(shown, box) - inner(swapped, box)).mean()
        d_camera = np.abs(inner(shown, box) - inner(camera, box)).mean()
        # the pipeline's swapped face, up to VP8 there and back; not the camera's face
        assert d_swapped < 8 and d_camera > 2 * d_swapped, (d_swapped, d_camera)
        # and by the project's identity embedding it is the face the swap drew, not the camera's
        to_swap, to_camera = identity(shown, swapped), identity(shown, camera)
        assert to_swap < 0.25 and to_camera > to_swap + 0.15, (to_swap, to_camera)

        second = browser.new_page()
        second.goto(s.url)
        second.wait_for_function("document.getElementById('error').textContent.startsWith('busy')",
                                 timeout=20000)
        second.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=20000)
        assert s.stats()["viewers"] == 2
        # a page that offers its camera anyway (two opened at once) is told "busy" by the server
        status, error = second.evaluate(OFFER_CAMERA)
        assert status == 409 and error.startswith("busy"), (status, error)

        sender.close()  # the seat is free within seconds, the other page still watches
        assert s.wait(lambda: not s.stats()["camera"]["busy"], 10), s.stats()
        second.keyboard.press("q")
        s.thread.join(timeout=20)
    assert not s.thread.is_alive() and not s.errors, (s.errors, s.lines)
    assert any("ended (quit)" in ln for ln in s.lines), s.lines
    with av.open(str(rec)) as c:  # the recording is complete and playable
        n = sum(1 for _ in c.decode(video=0))
        assert c.streams.audio, "the page's microphone (fake: a tone) is recorded"
    assert n >= 30, n


OFFER_CAMERA = """async () => {
    const media = await navigator.mediaDevices.getUserMedia({ video: true });
    const pc = new RTCPeerConnection();
    pc.addTransceiver(media.getVideoTracks()[0], { direction: "sendrecv" });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch("/offer" + location.search, { method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", camera: true }) });
    pc.close(); media.getTracks().forEach((t) => t.stop());
    return [r.status, (await r.json()).error];
}"""


def identity(frame: np.ndarray, other: np.ndarray) -> float:
    """The distance (0 same, 2 far) of the face in `frame` to the face in `other` by the project's
    identity embedding (engines.identity: dlib's ResNet in torch)."""
    from fractions import Fraction

    from swapstream.core.packet import FramePacket
    from swapstream.engines.identity import FaceEmbedder, distance
    from swapstream.stages.face.detect import DetectStage

    detect = DetectStage()
    try:
        marks = [detect.process([FramePacket(0, None, Fraction(1, 30), f)])[0].faces[0].landmarks
                 for f in (frame, other)]
    finally:
        detect.close()
    embed = FaceEmbedder()
    return float(distance(embed.embed(frame, marks[0]), embed.embed(other, marks[1])))


SENT_CODEC = """async () => {
    const stats = await pc.getStats();
    const out = [...stats.values()].find((s) => s.type === "outbound-rtp" && s.kind === "video");
    return out && out.codecId ? stats.get(out.codecId).mimeType : null;
}"""


def test_off_loopback_the_page_is_https_with_its_token_and_takes_vp8_and_h264(model_dir, camera_clip):
    """Bound to this machine's network address the page is served over TLS with a self-signed
    certificate (its fingerprint printed), every route needs the token, plain http gets no page;
    Chromium sends its camera in H.264 and, once that page closed, another in VP8."""
    import hashlib
    import socket

    from swapstream.stages.sinks.web import lan_address
    from tests.browser import chromium, require_chromium

    require_chromium()
    host = lan_address()
    if host.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    cfg = LiveConfig(swap=SwapSection(model=str(model_dir)), camera="browser", size=f"{W}x{H}",
                     outputs={"serve": f"{host}:0"}, duration=90)
    s = Session(cfg)
    url = s.url
    assert url.startswith(f"https://{host}:") and "?token=" in url, url
    printed = next(ln for ln in s.lines if "SHA-256 fingerprint" in ln).rsplit(" ", 1)[1]
    port = int(url.split(":")[2].split("/")[0])
    served = ssl.get_server_certificate((host, port))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).digest()
    assert printed == ":".join(f"{b:02X}" for b in digest), printed

    base = url.split("?")[0]
    insecure = ssl._create_unverified_context()
    for path in ("", "stats"):  # no token: 403 on every route
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + path, timeout=5, context=insecure)
        assert err.value.code == 403
    with socket.create_connection((host, port), timeout=5) as plain:  # http on the https port
        plain.sendall(f"GET /stats HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        try:
            reply = plain.recv(1024)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200"), reply

    with chromium((*fake_camera(camera_clip), "--ignore-certificate-errors")) as browser:
        for codec in ("h264", "vp8"):
            page = browser.new_page()
            page.goto(f"{url}&codec={codec}")
            page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30000)
            assert page.evaluate("window.isSecureContext")
            sent = page.evaluate(SENT_CODEC)
            assert sent and sent.lower() == f"video/{codec}", (codec, sent)
            # the camera is capped at the server's rate (web.CAMERA_BITS_PER_PIXEL at the asked size)
            cap = page.evaluate("pc.getSenders().find((s) => s.track && s.track.kind === 'video')"
                                ".getParameters().encodings[0].maxBitrate")
            assert cap == round(W * H * 30 * 0.1 / 1000) * 1000, cap
            page.close()
            assert s.wait(lambda: not s.stats()["camera"]["busy"], 10), s.stats()
    s.quit()
    assert not s.thread.is_alive() and not s.errors, (s.errors, s.lines)
