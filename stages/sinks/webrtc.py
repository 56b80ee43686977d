"""The web page's WebRTC side: the newest frame and recent audio handed from the sink's thread to
the server's event loop, one video (and audio) track per viewer, and the viewers' connections.

    sink thread ──Hub.publish(frame)──> newest frame ──> VideoTrack (viewer 1) ──> VP8 ──> browser
                ──Hub.push_audio(pcm)─> each viewer's AudioTrack buffer (capped) ──> Opus ──> browser

- A viewer only ever takes the newest frame: its encoder asks for the next frame when it has sent
  the last one, so a slow viewer skips frames and never holds up the pipeline or other viewers.
- Audio is resampled once, in the sink's thread, to 48 kHz s16 stereo (what Opus takes); each
  viewer's track plays it in 20 ms frames at real-time pace, silence when there is none.
- No STUN or TURN servers: the page is for the local network. aiortc answers with its host
  candidates; a browser that hides its own behind mDNS names is found by peer-reflexive ones.

Everything here but Hub.publish / Hub.push_audio runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import fractions
import secrets
import threading
import time

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from swapstream.core.audio import AUDIO_RATE
from swapstream.stages.sinks.webrtc_codecs import i420_pixels, quick_senders, with_start_bitrate

VIDEO_CLOCK = 90_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz: one Opus frame
# A viewer's audio buffer is its added latency, and the browser delays the video to match (lip
# sync): with 0.2 s of room it filled up over a minute and took the page's video latency from
# ~70 to ~200 ms. Beyond AUDIO_MAX_S the oldest samples go, down to AUDIO_PREFILL_S.
AUDIO_MAX_S = 0.1
AUDIO_PREFILL_S = 0.04  # after running dry, wait for this much before playing again (no crackle)
CONNECT_TIMEOUT_S = 20.0  # a viewer not connected this long after its offer is dropped
REPEAT_S = 1.0  # with no new frame for this long, the last one is sent again (keeps the stream up)
SENDER_SILENT_S = 4.0  # a sending page whose camera frames stop this long frees the seat


class BusyError(ValueError):
    """Another page holds the camera seat."""


class Hub:
    """The hand-over between the sink's thread and the event loop: the newest frame, and audio
    pushed to every viewer's audio track. publish() and push_audio() may be called from any
    thread and return at once; the rest runs on `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._frame: tuple[np.ndarray, str] | None = None  # (pixels, format): webrtc_codecs.i420_pixels
        self._stamp = 0.0
        self._seq = 0
        self._changed = asyncio.Event()
        self.audio_tracks: set[AudioTrack] = set()
        self.viewers = 0

    def publish(self, frame: np.ndarray, stamp: float) -> None:
        """Make `frame` ((H, W, 3) uint8 RGB) the newest; `stamp` is its time.monotonic() seconds.
        While anyone watches it is converted here, once for every viewer, to the encoders' yuv420p
        (a new array: another sink may draw on the frame later). Any thread."""
        pixels = i420_pixels(frame) if self.viewers else (frame, "rgb24")
        with self._lock:
            self._frame, self._stamp, self._seq = pixels, stamp, self._seq + 1
        if self.viewers:
            self._call(self._wake)

    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue `pcm` ((2 * N,) int16, 48 kHz stereo interleaved) for every viewer. Any thread."""
        if self.audio_tracks:
            self._call(self._feed, pcm)

    def latest(self) -> tuple[int, tuple[np.ndarray, str] | None, float]:
        """(sequence number, newest frame as (pixels, format) or None, its stamp)."""
        with self._lock:
            return self._seq, self._frame, self._stamp

    async def wait_newer(self, seq: int, timeout: float) -> bool:
        """Wait until a frame newer than `seq` is published; False after `timeout` seconds."""
        while self.latest()[0] <= seq:
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except asyncio.TimeoutError:
                return self.latest()[0] > seq
        return True

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass

    def _wake(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def _feed(self, pcm: np.ndarray) -> None:
        for t in self.audio_tracks:
            t.feed(pcm)


class VideoTrack(MediaStreamTrack):
    """One viewer's video: the newest published frame as an av.VideoFrame (rgb24, pts in 1/90000
    s, always increasing). Waits for a frame newer than the one it sent last."""

    kind = "video"

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self._seen = 0
        self._t0: float | None = None
        self._pts = -1

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not await self.hub.wait_newer(self._seen, REPEAT_S):
            while self.hub.latest()[1] is None:  # nothing published yet: wait for the first frame
                await self.hub.wait_newer(self._seen, REPEAT_S)
                if self.readyState != "live":
                    raise MediaStreamError
        seq, frame, stamp = self.hub.latest()
        now = time.monotonic()
        stamp = stamp if seq > self._seen else now  # a repeat is stamped when it is sent
        self._seen = seq
        if self._t0 is None:
            self._t0 = stamp
        self._pts = max(self._pts + 1, round((stamp - self._t0) * VIDEO_CLOCK))
        out = av.VideoFrame.from_ndarray(*frame)
        out.pts, out.time_base = self._pts, fractions.Fraction(1, VIDEO_CLOCK)
        return out


class AudioTrack(MediaStreamTrack):
    """One viewer's audio: 20 ms av.AudioFrames, s16 stereo at 48 kHz, at real-time pace, from the
    samples fed to it (silence while there are none)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buf = np.zeros(0, np.int16)  # (2 * N,) interleaved
        self._playing = False
        self._t0: float | None = None
        self._sent = 0

    def feed(self, pcm: np.ndarray) -> None:
        """Append (2 * N,) int16 interleaved stereo; beyond AUDIO_MAX_S the oldest samples go,
        down to AUDIO_PREFILL_S (one short skip instead of a delay that stays)."""
        self._buf = np.concatenate([self._buf, pcm])
        if len(self._buf) > 2 * AUDIO_RATE * AUDIO_MAX_S:
            self._buf = self._buf[-2 * int(AUDIO_RATE * AUDIO_PREFILL_S):]

    def _take(self) -> np.ndarray:
        n = 2 * AUDIO_FRAME
        if not self._playing and len(self._buf) >= 2 * AUDIO_RATE * AUDIO_PREFILL_S:
            self._playing = True
        out = np.zeros(n, np.int16)
        if self._playing:
            got = self._buf[:n]
            out[:len(got)] = got
            self._buf = self._buf[len(got):]
            self._playing = len(got) == n
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:  # the first frame: start with a short buffer, not what piled up
            self._buf = self._buf[-2 * int(AUDIO_RATE * AUDIO_PREFILL_S):]
        if self._t0 is None or now - (self._t0 + self._sent / AUDIO_RATE) > AUDIO_MAX_S:
            self._t0 = now - self._sent / AUDIO_RATE  # first frame, or the loop fell far behind
        else:
            await asyncio.sleep(self._t0 + self._sent / AUDIO_RATE - now)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME)
        frame.planes[0].update(self._take().tobytes())
        frame.pts, frame.sample_rate = self._sent, AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._sent += AUDIO_FRAME
        return frame


class AudioConverter:
    """AudioChunk samples ((C, N) float32 in [-1, 1] at any rate) -> (2 * M,) int16 interleaved
    stereo at 48 kHz, through one resampler that keeps its state between chunks."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._resampler: av.AudioResampler | None = None

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        x = np.ascontiguousarray(np.clip(samples[:2], -1.0, 1.0), np.float32)
        if (len(x), rate) != self._key:
            self._key = (len(x), rate)
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="mono" if len(x) == 1 else "stereo")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, handing a frame to the decoder as soon as its last packet (the
    RTP marker bit) and every packet before it are in. aiortc's own waits for the next frame's
    first packet: one frame interval (33 ms at 30 fps) added to every camera frame from a page."""

    _sent: int | None = None  # the RTP timestamp of the last frame handed over

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        # packets of a frame already handed over (padding after its marker) are dropped: alone they
        # would make an empty frame, which the decoder takes as end of stream
        while (first := self._packets[self._origin % self._capacity]) is not None \
                and first.timestamp == self._sent:
            self.remove(1)
        packets, timestamp = [], None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                break
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)
                if not data:
                    return None
                self._sent = timestamp
                return JitterFrame(data=data, timestamp=timestamp)
        frame = super()._remove_frame(sequence_number)
        if frame is not None:
            if not frame.data:
                return None
            self._sent = frame.timestamp
        return frame


def _quick_receivers(pc: RTCPeerConnection) -> None:
    """Give the connection's video receivers a MarkerJitterBuffer (before any packet arrives);
    an aiortc without the private attribute keeps its own buffer."""
    for t in pc.getTransceivers():
        name = "_RTCRtpReceiver__jitter_buffer"
        if t.kind == "video" and isinstance(getattr(t.receiver, name, None), JitterBuffer):
            setattr(t.receiver, name, MarkerJitterBuffer(capacity=512, is_video=True))


class Viewers:
    """The viewers' peer connections: answer an offer, drop a viewer that left or failed, close
    all. Runs on the hub's event loop."""

    def __init__(self, hub: Hub, audio: bool) -> None:
        self.hub, self.audio = hub, audio
        self.peers: dict[str, RTCPeerConnection] = {}
        self._tracks: dict[str, list[MediaStreamTrack]] = {}
        self._next = 0
        self._dropping: set[asyncio.Future] = set()
        self.inbox = None  # stages.sources.browser.Inbox of the session's page camera, once one sent
        self.sender: str | None = None  # the viewer id of the page that sends its camera

    async def answer(self, sdp: str, kind: str, inbox=None, start_kbps: int | None = None) -> dict:
        """The answer to a browser's offer: {"sdp", "type", "id"}. ValueError for a bad offer.
        With `inbox` (stages.sources.browser.Inbox) the page is the sender: its camera (and
        microphone) go to the inbox, and it gets the swapped video back on the same connection;
        BusyError when another page holds the seat. start_kbps: the rate the page's camera starts
        at (with_start_bitrate), instead of WebRTC's ~300 kbit/s ramping up over ~20 s."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # local network: no STUN servers
        self._next += 1
        pid = f"v{self._next}-{secrets.token_urlsafe(12)}"  # unguessable: only its page may say bye
        if inbox is not None and not inbox.claim(pid):
            await pc.close()
            raise BusyError("busy: another page is sending its camera; you can watch, or close that page")
        self.peers[pid], self._tracks[pid] = pc, []
        self.hub.viewers = len(self.peers)
        tracks = self._tracks[pid]
        incoming: list[str] = []  # the kinds of the tracks the page sends (a sender's camera)
        if inbox is not None:
            self.inbox, self.sender = inbox, pid
            self._spawn(self._watch(pid, inbox))

            @pc.on("track")  # emitted during setRemoteDescription, for each track the page sends
            def _incoming(track: MediaStreamTrack) -> None:
                incoming.append(track.kind)
                self._spawn(self._receive(pid, track, inbox))

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.drop(pid)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
            if inbox is not None:
                if "video" not in incoming:
                    raise ValueError("it offers a camera but sends no video; offer the camera's track")
                _quick_receivers(pc)
            kinds = [t.kind for t in pc.getTransceivers()]
            if "video" not in kinds:
                raise ValueError("it asks for no video")
            for k in ("video", "audio"):  # each track is an encoder: 12 of them took fps 23 -> 11
                if kinds.count(k) > 1:
                    raise ValueError(f"it asks for {kinds.count(k)} {k} tracks; one at most")
            for t in pc.getTransceivers():
                if t.kind == "video":
                    tracks.append(VideoTrack(self.hub))
                elif t.kind == "audio" and self.audio:
                    tracks.append(AudioTrack())
                else:
                    continue
                sender = pc.addTrack(tracks[-1])
                if isinstance(tracks[-1], AudioTrack) and hasattr(sender, "_stream_id"):
                    # Audio in a stream of its own, so the browser does not hold the video back
                    # to lip-sync it with its adaptive audio buffer (measured: the page's video
                    # buffer grew from ~7 to ~70 ms over a minute; now ~13 ms). The audio left
                    # the pipeline with its frame; here it waits 40-100 ms (AUDIO_PREFILL_S to
                    # AUDIO_MAX_S) plus the browser's audio buffer (~40 ms in its stats), so it
                    # trails the picture. (aiortc gives all tracks of a connection one stream id.)
                    sender._stream_id = f"{sender._stream_id}-audio"
            await pc.setLocalDescription(await pc.createAnswer())
            quick_senders(pc)
            answer = pc.localDescription.sdp
            if inbox is not None and start_kbps:
                answer = with_start_bitrate(answer, start_kbps)
        except Exception as err:
            await self.drop(pid)
            raise ValueError(f"bad offer: {err}") from err
        self.hub.audio_tracks.update(t for t in tracks if isinstance(t, AudioTrack))
        asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._expire, pid, pc)
        return {"sdp": answer, "type": pc.localDescription.type, "id": pid}

    def _expire(self, pid: str, pc: RTCPeerConnection) -> None:
        """A viewer that never connected (its page went away during the handshake) is dropped."""
        if self.peers.get(pid) is pc and pc.connectionState != "connected":
            self._spawn(self.drop(pid))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._dropping.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._dropping.discard)

    async def _receive(self, pid: str, track: MediaStreamTrack, inbox) -> None:
        """The sender's `track` into the inbox, frame by frame, as fast as they come (decoded
        frames never wait in aiortc's queue); the seat is freed when the track ends. A video
        track also watches the sender: no frame for SENDER_SILENT_S (its network is gone, its tab
        hidden) frees the seat for the next page."""
        video = track.kind == "video"
        try:
            while self.peers.get(pid) is not None:
                frame = await track.recv()
                if inbox.sender != pid:
                    break
                if video:
                    inbox.put(frame, sender=pid)
                else:
                    inbox.put_audio(frame)
        except MediaStreamError:
            pass
        if video:
            await self.drop(pid)

    async def _watch(self, pid: str, inbox) -> None:
        started = time.monotonic()
        while self.peers.get(pid) is not None and inbox.sender == pid:
            await asyncio.sleep(0.5)
            last = inbox.last_arrival or started
            if time.monotonic() - last > SENDER_SILENT_S:
                await self.drop(pid)
                return

    async def drop(self, pid: str) -> None:
        """Close a viewer's connection and stop its tracks; nothing if it is gone already. A
        sender's seat is freed."""
        pc = self.peers.pop(pid, None)
        self.hub.viewers = len(self.peers)
        if self.sender == pid:
            self.inbox.release(pid)
            self.sender = None
        if pc is None:
            return
        for t in self._tracks.pop(pid, []):
            self.hub.audio_tracks.discard(t)
            t.stop()
        await pc.close()

    async def close(self) -> None:
        await asyncio.gather(*(self.drop(pid) for pid in list(self.peers)), return_exceptions=True)
