"""`swapstream studio`, end to end in headless Chromium on the sample faces: sources -> extract ->
delete and undo -> sort -> train a few steps (curve and preview) -> tune a frame -> convert two
clips with the tuned settings; and its security rules (paths inside the workspace, upload limit,
token off loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import av
import pytest

from swapstream.pipeline.studio.server import Studio, StudioSettings
from swapstream.stages.sinks.file import synthetic_tags


class Running:
    """A Studio served on its own event loop in a thread; stop() ends it."""

    def __init__(self, settings: StudioSettings) -> None:
        self.studio = Studio(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.studio.start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return self.studio.url

    def get(self, path: str, token: bool = True):
        base, _, query = self.url.partition("?")
        sep = "&" if "?" in path else "?"
        url = base + path.lstrip("/") + (f"{sep}{query}" if token and query else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()

    def post(self, path: str, body: dict):
        base, _, query = self.url.partition("?")
        req = urllib.request.Request(base + path.lstrip("/") + (f"?{query}" if query else ""),
                                     json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.studio.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def error_of(call) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as err:
        call()
    body = err.value.read().decode()
    try:
        body = json.loads(body)["error"]
    except (ValueError, KeyError):
        pass
    return err.value.code, body


@pytest.fixture
def workspace(clips, tmp_path) -> Path:
    ws = tmp_path / "ws"
    (ws / "sources").mkdir(parents=True)
    shutil.copy(clips["a"], ws / "sources" / "astronaut.mp4")
    shutil.copy(clips["b"], ws / "sources" / "grace.mp4")
    return ws


def faces_in(folder: Path) -> int:
    """The face images of a faceset folder (its contact sheets, _*.png, left out)."""
    return len([f for f in folder.glob("*.png") if not f.name.startswith("_")])


def wait_job(page, workspace: Path, title: str, timeout: float = 240) -> str:
    """Wait until the job called `title` ends on the Jobs table; its state cell's text. A job still
    shown running at the timeout fails the test with what the page shows and what the workspace holds
    (running_jobs), so a hang says where it is: the command, or the page's polling."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """(title) => [...document.querySelectorAll('#jobs tr')].some((tr) =>
                 tr.cells[0].textContent === title && !/^running/.test(tr.cells[1].textContent))""",
            arg=title, timeout=timeout * 1000)
    except PlaywrightTimeout:
        shown = page.evaluate("[...document.querySelectorAll('#jobs tr')]"
                              ".map((tr) => tr.innerText).join('\\n')")
        pytest.fail(f"job {title!r} shown running after {timeout:.0f} s; the page's jobs:\n{shown}\n"
                    f"the workspace's:\n{running_jobs(workspace)}")
    return page.evaluate("""(title) => [...document.querySelectorAll('#jobs tr')]
        .find((tr) => tr.cells[0].textContent === title).cells[1].textContent""", title)


def running_jobs(workspace: Path) -> str:
    """Each job of the workspace: its state on file and its exit code (jobs/<id>.rc) when it ended;
    one whose process still runs is asked for its threads' stacks (SIGUSR1) first; its log's tail."""
    import signal
    import time

    from swapstream.pipeline.studio.jobs import _alive

    out = []
    for meta in sorted((workspace / "jobs").glob("*.json")):
        job = json.loads(meta.read_text())
        rc = workspace / "jobs" / f"{job['id']}.rc"
        alive = _alive(job["pid"], job.get("since"))
        if alive:
            os.kill(job["pid"], signal.SIGUSR1)
            time.sleep(2)
        head = (f"--- {job['title']}: {job['state']} on file, process {'running' if alive else 'gone'}, "
                f"rc {rc.read_text() if rc.exists() else 'none'}")
        if job["state"] == "running" or alive:
            log = (workspace / "jobs" / f"{job['id']}.log").read_bytes()[-12000:]
            head += ":\n" + log.decode("utf-8", "replace")
        out.append(head)
    return "\n".join(out)


def test_a_new_user_goes_from_two_clips_to_converted_videos_in_the_studio(workspace, clips):
    from tests.browser import chromium, require_chromium

    require_chromium()
    s = Running(StudioSettings(str(workspace), "127.0.0.1", 0))
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(s.url)
            page.wait_for_selector("input.source")
            # 0. a video uploaded from the page lands in sources/
            page.set_input_files("#upload-files", str(clips["ab"]))
            page.click("#upload")
            page.wait_for_selector("input.source[value='sources/ab.mp4']")
            assert (workspace / "sources" / "ab.mp4").read_bytes() == Path(clips["ab"]).read_bytes()
            # and a file of this machine, by its path (the studio is on loopback)
            page.fill("#add-path", str(clips["empty"]))
            page.click("#add")
            page.wait_for_selector("input.source[value='sources/empty.mp4']")
            assert (workspace / "sources" / "empty.mp4").read_bytes() == Path(clips["empty"]).read_bytes()
            # 1. facesets: extract each person's clip into a faceset of its own
            for src, name in (("sources/astronaut.mp4", "a"), ("sources/grace.mp4", "b")):
                page.uncheck("input.source[value='sources/astronaut.mp4']")
                page.uncheck("input.source[value='sources/grace.mp4']")
                page.check(f"input.source[value='{src}']")
                page.fill("#faceset-name", name)
                page.click("#extract")
                assert wait_job(page, workspace, f"extract {name}") == "done"
            # the two-person clip, only the faces like faceset b's (Grace Hopper's): one of two a frame
            page.uncheck("input.source[value='sources/grace.mp4']")
            page.check("input.source[value='sources/ab.mp4']")
            page.fill("#faceset-name", "b_from_ab")
            page.select_option("#like", "b")
            page.click("#extract")
            assert wait_job(page, workspace, "extract b_from_ab") == "done"
            liked = faces_in(workspace / "facesets" / "b_from_ab")
            assert 20 <= liked <= 30, liked  # 30 frames with two faces each
            page.uncheck("input.source[value='sources/ab.mp4']")
            page.select_option("#like", "")
            n = faces_in(workspace / "facesets" / "a")
            assert n >= 20, n
            # delete two faces, undo, delete one for good
            page.click("#facesets button:text-is('a')")
            page.wait_for_function("document.querySelectorAll('#faces img').length > 0")
            # its expression and pose coverage, and what a model trained on it could not draw
            page.wait_for_function("document.getElementById('coverage').textContent.startsWith('coverage:')")
            first = page.eval_on_selector_all("#faces img",
                                              "imgs => imgs.slice(0, 2).map(i => i.dataset.face)")
            for f in first:
                page.click(f"#faces img[data-face='{f}']")
            page.click("#delete")
            page.wait_for_function(f"document.getElementById('fs-count').textContent === '{n - 2}'")
            assert not any((workspace / "facesets" / "a" / f).exists() for f in first)
            page.click("#undo")
            page.wait_for_function(f"document.getElementById('fs-count').textContent === '{n}'")
            assert all((workspace / "facesets" / "a" / f).exists() for f in first)
            # delete one for good and sort by person at once: the page is still busy with the delete
            # when Sort is clicked; the click is queued, not lost, and the sort sorts what is left
            page.click(f"#faces img[data-face='{first[0]}']")
            page.click("#delete")
            page.click("#sort")
            assert wait_job(page, workspace, "sort a") == "done"
            # one person here, whose folder is listed beside the faceset
            page.wait_for_selector("#facesets button:text-is('a/person_1')")
            kept = faces_in(workspace / "facesets" / "a" / "person_1")
            assert kept >= n - 1 - 3, (kept, n)  # a few may be outliers
            sorted_faces = [f.name for f in (workspace / "facesets" / "a").glob("*/*.png")
                            if not f.name.startswith("_")]
            assert first[0] not in sorted_faces, first[0]
            assert len(sorted_faces) == n - 1, (len(sorted_faces), n)

            # 2. train a few steps: the loss curve and the preview appear
            page.click("nav button[data-tab='train']")
            page.select_option("#train-a", "a/person_1")
            page.select_option("#train-b", "b")
            page.fill("#train-model", "ab")
            page.fill("#train-steps", "12")
            page.click("#train")
            assert wait_job(page, workspace, "train ab") == "done"
            page.wait_for_function("document.querySelector('#curve polyline') !== null", timeout=20000)
            page.wait_for_function("!document.getElementById('preview').hidden && "
                                   "document.getElementById('preview').naturalWidth > 0", timeout=20000)
            page.wait_for_function("[...document.querySelectorAll('#checkpoints li')]"
                                   ".some((li) => li.textContent.startsWith('step 12'))", timeout=20000)

            # 3. tune a frame: a setting changes the picture; save the settings for convert
            page.click("nav button[data-tab='tune']")
            page.select_option("#tune-video", "sources/astronaut.mp4")
            page.select_option("#tune-model", "ab")
            page.wait_for_function("Number(document.getElementById('tune-after').dataset.rendered || 0) >= 1",
                                   timeout=60000)
            first = page.get_attribute("#tune-after", "src")
            before = page.get_attribute("#tune-before", "src")
            assert first.startswith("data:image/jpeg") and first != before  # the swap changed the frame
            page.wait_for_timeout(1500)  # renders asked for while choosing the video and model
            first = page.get_attribute("#tune-after", "src")
            page.select_option("#tune-settings [data-key='blend.color']", "none")
            # the new setting, re-rendered: the after picture changes
            page.wait_for_function("(first) => document.getElementById('tune-after').src !== first",
                                   arg=first, timeout=30000)
            assert page.get_attribute("#tune-before", "src") == before
            # only one person: the faceset b (Grace Hopper) is not in this video, so nothing changes;
            # the astronaut's own faceset swaps her again
            shown = page.get_attribute("#tune-after", "src")
            page.select_option("#tune-only", "b")
            page.wait_for_function("(shown) => document.getElementById('tune-after').src !== shown",
                                   arg=shown, timeout=60000)
            assert page.get_attribute("#tune-after", "src") == before  # left as it was
            page.select_option("#tune-only", "a/person_1")
            page.wait_for_function("(before) => document.getElementById('tune-after').src !== before",
                                   arg=before, timeout=60000)
            page.fill("#settings-name", "only_a")
            page.click("#save-settings")
            page.wait_for_function("document.getElementById('saved').textContent.includes('only_a')")
            assert "- ../facesets/a/person_1" in (workspace / "settings" / "only_a.yaml").read_text()
            page.select_option("#tune-only", "")
            page.fill("#settings-name", "tuned")
            page.click("#save-settings")
            page.wait_for_function("document.getElementById('saved').textContent.includes('tuned')")
            saved = (workspace / "settings" / "tuned.yaml").read_text()
            assert "color: none" in saved, saved

            # 4. convert both clips with the model and the tuned settings, one after another
            page.click("nav button[data-tab='convert']")
            page.select_option("#convert-settings", "tuned")
            page.check("input.convert-input[value='sources/astronaut.mp4']")
            page.check("input.convert-input[value='sources/grace.mp4']")
            page.select_option("#convert-model", "ab")
            page.click("#convert")
            assert wait_job(page, workspace, "convert 2 file(s) with ab", 400) == "done"
            page.wait_for_function("document.querySelectorAll('#outputs li').length === 2", timeout=10000)
            page.wait_for_function("[...document.querySelectorAll('#queue tr')].filter((tr) => "
                                   "tr.cells[1].textContent === 'done').length === 2", timeout=10000)
            # an error is one readable line at the top of the page
            page.click("nav button[data-tab='facesets']")
            page.fill("#faceset-name", "../evil")
            page.check("input.source[value='sources/grace.mp4']")
            page.click("#extract")
            page.wait_for_function("document.getElementById('error').textContent.includes('not allowed')")
            assert "\n" not in page.text_content("#error")
    finally:
        s.stop()
    outputs = sorted((workspace / "outputs").glob("*.mp4"))
    assert len(outputs) == 2, outputs
    for out in outputs:
        assert synthetic_tags(out)["synthetic_media"] == "1"
        with av.open(str(out)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 60  # the clip's 2 s at 30 fps


def test_the_studio_keeps_to_its_workspace(workspace, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG not yours")
    os.symlink(outside, workspace / "sources" / "link.png")
    s = Running(StudioSettings(str(workspace), "127.0.0.1", 0, max_upload=1000))
    try:
        assert s.get("/api/state")[0] == 200
        for path in ("../secret.png", "/etc/passwd", "sources/link.png", "sources/../../secret.png"):
            code, why = error_of(lambda p=path: s.get(f"/file?path={urllib.request.quote(p)}"))
            assert code == 400 and ("outside" in why or "symbolic link" in why or "not a path" in why), why
        code, why = error_of(lambda: s.post("/api/extract", {"sources": ["../secret.png"], "faceset": "x"}))
        assert code == 400 and "outside the workspace" in why, why
        # an upload over the limit is refused and leaves nothing
        base, _, query = s.url.partition("?")
        boundary = "swapstreamtest"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
                "Content-Type: video/mp4\r\n\r\n")
        body = head.encode() + b"x" * 5000 + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(base + "api/upload", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Swapstream-Upload": "1"})
        code, why = error_of(lambda: urllib.request.urlopen(req, timeout=10))
        assert code == 413 and "upload limit" in why, why
        left = [p.name for p in (workspace / "sources").iterdir()]
        assert not [n for n in left if "big" in n], left  # nothing half-written, under any name
        # a cluster address that is not one is refused before anything runs
        shutil.copytree(workspace / "sources", workspace / "models" / "m")  # a folder named like a model
        (workspace / "models" / "m" / "model.json").write_text("{}")
        code, why = error_of(lambda: s.post("/api/convert", {"inputs": ["sources/grace.mp4"], "model": "m",
                                                             "parallel": 2, "address": "x; rm -rf /"}))
        assert code == 400 and "not HOST:PORT" in why, why
        # a playlist could make FFmpeg read outside the workspace: only videos by their extension
        (workspace / "sources" / "list.m3u8").write_text(f"#EXTM3U\n{outside}\n")
        code, why = error_of(lambda: s.post("/api/tune", {"video": "sources/list.m3u8", "model": "m"}))
        assert code == 400 and "not a video" in why, why
        # a faceset copied in under a name the studio does not take, and one whose trash is a link
        # out of the workspace: both listed with their problem, the page keeps working
        (workspace / "facesets" / "José (old)").mkdir(parents=True)
        (workspace / "facesets" / "linked").mkdir()
        os.symlink(tmp_path, workspace / "facesets" / "linked" / ".trash")
        state = json.loads(s.get("/api/state")[1])
        problems = {f["name"]: f.get("problem") for f in state["facesets"]}
        assert problems["José (old)"] and "symbolic link" in problems["linked"], problems
        code, why = error_of(lambda: s.post("/api/undo", {"faceset": "linked"}))
        assert code == 400 and "symbolic link" in why, why
        # by path, on loopback: videos and photos only
        code, why = error_of(lambda: s.post("/api/add", {"path": "/etc/passwd"}))
        assert code == 400 and "not a video or photo" in why, why
        # a cross-site form (not JSON, no upload header) cannot post
        form = urllib.request.Request(base + "api/stop", b"id=x",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert error_of(lambda: urllib.request.urlopen(form, timeout=10))[0] == 415
    finally:
        s.stop()


def test_off_loopback_every_route_needs_the_token(workspace):
    from swapstream.stages.sinks.web import lan_address

    host = lan_address()
    if host.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    s = Running(StudioSettings(str(workspace), host, 0))
    try:
        assert "?token=" in s.url
        for path in ("/", "/api/state", "/file?path=sources/grace.mp4"):
            assert error_of(lambda p=path: s.get(p, token=False))[0] == 403
        assert s.get("/api/state")[0] == 200
        # a file of the server by its path: only on loopback (a token holder could copy anyone's files)
        code, why = error_of(lambda: s.post("/api/add", {"path": "/etc/hostname"}))
        assert code == 400 and "only when the studio is bound to" in why, (code, why)
    finally:
        s.stop()


@pytest.fixture
def with_model(workspace, model_dir) -> Path:
    shutil.copytree(model_dir, workspace / "models" / "m")
    return workspace


def wait_api(s: Running, what, timeout: float = 120):
    """Poll the studio's /api/state until what(state) is truthy; returns it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = what(json.loads(s.get("/api/state")[1]))
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_the_queue_finishes_across_a_studio_restart_and_resumes_after_a_kill(with_model):
    """Conversions are jobs of their own: a studio stopped mid-queue and started again finds the
    queue finished (both outputs playable and tagged); a queue whose process was killed shows
    "interrupted", and running it again finishes it."""
    import signal

    ws = with_model
    inputs = ["sources/astronaut.mp4", "sources/grace.mp4"]
    s = Running(StudioSettings(str(ws), "127.0.0.1", 0))
    try:
        job = s.post("/api/convert", {"inputs": inputs, "model": "m"})
        assert wait_api(s, lambda st: json.loads(s.get("/api/queue")[1])["files"])  # the queue is written
    finally:
        s.stop()  # the studio goes away mid-queue; the conversion goes on
    s = Running(StudioSettings(str(ws), "127.0.0.1", 0))
    try:
        done = wait_api(s, lambda st: next((j for j in st["jobs"] if j["id"] == job["id"]
                                            and j["state"] != "running"), None), 240)
        assert done and done["state"] == "done", done
        files = json.loads(s.get("/api/queue")[1])["files"]
        assert [f["state"] for f in files] == ["done", "done"], files
    finally:
        s.stop()
    for out in sorted((ws / "outputs").glob("*.mp4")):
        assert synthetic_tags(out)["synthetic_media"] == "1"
        with av.open(str(out)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 60

    # killed outright (the machine went down): interrupted; running it again finishes the queue
    for out in (ws / "outputs").glob("*.mp4"):
        out.unlink()
    s = Running(StudioSettings(str(ws), "127.0.0.1", 0))
    try:
        job = s.post("/api/convert", {"inputs": inputs, "model": "m"})
        assert wait_api(s, lambda st: json.loads(s.get("/api/queue")[1])["files"][0]["state"] == "running")
        os.killpg(job["pid"], signal.SIGKILL)
        s.stop()
        s = Running(StudioSettings(str(ws), "127.0.0.1", 0))
        # SIGKILL lands asynchronously: on a loaded machine the first look may still find it running
        gone = wait_api(s, lambda st: next((j for j in st["jobs"] if j["id"] == job["id"]
                                            and j["state"] != "running"), None), 30)
        assert gone and gone["state"] == "interrupted", gone
        again = s.post("/api/rerun", {"id": job["id"]})
        done = wait_api(s, lambda st: next((j for j in st["jobs"] if j["id"] == again["id"]
                                            and j["state"] != "running"), None), 240)
        assert done and done["state"] == "done", (done, s.jobs.log_tail(again["id"]) if done else "")
        assert [f["state"] for f in json.loads(s.get("/api/queue")[1])["files"]] == ["done", "done"]
    finally:
        s.stop()
    assert len(list((ws / "outputs").glob("*.swapped.mp4"))) == 2


def test_a_live_session_starts_from_the_studio_and_its_page_plays(with_model):
    """Live from the studio: a source video played as the camera, the live page's link appears
    on the job, the page plays the swapped video in Chromium, Stop ends the session."""
    from tests.browser import chromium, require_chromium

    require_chromium()
    s = Running(StudioSettings(str(with_model), "127.0.0.1", 0))
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(s.url)
            page.click("nav button[data-tab='live']")
            page.select_option("#live-model", "m")
            page.select_option("#live-camera", "sources/astronaut.mp4")
            page.click("#live-start")
            link = page.wait_for_selector("a.live-link", timeout=60000).get_attribute("href")
            assert link.startswith("http://127.0.0.1:"), link
            live = browser.new_page()
            live.goto(link)
            live.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30000)
            page.click("#live-sessions button:text-is('Stop')")
            ended = wait_api(s, lambda st: next((j for j in st["jobs"] if j["kind"] == "live"
                                                 and j["state"] != "running"), None), 30)
            assert ended and ended["state"] in ("done", "stopped"), ended
    finally:
        s.stop()
