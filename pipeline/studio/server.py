"""`swapstream studio`: the web app over a workspace (pipeline.studio.workspace), served by the
project's own aiohttp server with one plain HTML/JS page (pipeline/studio/data/studio.html).

    GET  /                 the page
    GET  /api/state        {sources, facesets, models, outputs, jobs, workspace}
    GET  /api/faces        ?faceset=NAME -> {faces: [names]}
    GET  /api/model        ?name=NAME -> {history: [rows], preview: bool, curve: bool}
    GET  /api/log          ?id=JOB -> {log: text}
    GET  /file             ?path=REL: a file of the workspace (faces, previews, outputs)
    POST /api/upload       multipart, header X-Swapstream-Upload: files into sources/ (size-limited)
    POST /api/add          {path: "/abs/path/to/video.mp4"}: a file of this machine copied into sources/
                           (a video or photo; only when the studio is bound to loopback)
    POST /api/extract      {sources: [REL], faceset: NAME, every: N, like: FACESET | REL?} -> a job
    POST /api/sort         {faceset: NAME}                               -> a job
    POST /api/train        {a: NAME, b: NAME, model: NAME, steps: N, preset, resume} -> a job
    POST /api/convert      {inputs: [REL], model: NAME, settings: NAME?, parallel: N, address?} -> a job
    POST /api/tune         {video: REL, model: NAME, time: s, settings: {sections}} -> before/after JPEGs
    POST /api/settings     {name: NAME, settings: {sections}}: settings/NAME.yaml, for convert and live
    POST /api/delete       {faceset: NAME, faces: [names]}; /api/undo {faceset: NAME}
    POST /api/stop         {id: JOB}; /api/rerun {id: JOB}: the same command again (a training run
                           resumes from its checkpoint, a conversion queue where it stopped)
    GET  /api/queue        the conversion queue of outputs/ (pipeline.conversion_queue): each file's state
    POST /api/queue/cancel {id: FILE JOB}: cancel one file of the queue, running or queued
    POST /api/live         {model: NAME, camera: "browser" | device | REL video, settings: NAME?} -> a
                           live session as a job; its page's URL appears on the job when it is up
    GET  /api/coverage     ?faceset=NAME -> {line, warnings}: its expression and pose coverage

Every long piece of work is a `swapstream` command in its own process (pipeline.studio.jobs):
the page stays responsive, and the job's command line is shown so it can be typed instead.
Security as the live page (docs/security.md): loopback by default; any other address needs the
token the printed URL carries; every POST is JSON or an upload with its header; paths are inside
the workspace, through no symbolic link; uploads are limited to `max_upload` bytes each.
Errors are one line: {"error": "..."} with a 4xx status, shown as they are on the page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiohttp import web

from swapstream.core.errors import SwapstreamError
from swapstream.pipeline.conversion_queue import JobQueue, queue_path, request_cancel
from swapstream.pipeline.studio.jobs import Jobs
from swapstream.pipeline.studio.tune import Tuner, save_settings
from swapstream.pipeline.studio.workspace import (
    IMAGE_EXT,
    VIDEO_EXT,
    Workspace,
    check_faceset,
    check_name,
    safe_name,
)
from swapstream.stages.sinks.server import GuardedServer, access_guard, is_loopback
from swapstream.stages.sinks.web import listen, page_url, quiet_logs
from swapstream.training.coverage import faceset_coverage
from swapstream.training.logs import CURVE, read_history

log = logging.getLogger("swapstream.studio")
DEFAULT_MAX_UPLOAD = 2 << 30  # 2 GiB a file
PRESETS = ("lite64", "original64", "hd128", "hd256")


@dataclass
class StudioSettings:
    """workspace: the folder; host/port: where to listen (port 0: any free one); token: required
    off loopback (None: a random one there); max_upload: bytes a file."""

    workspace: str = "studio"
    host: str = "127.0.0.1"
    port: int = 8090
    token: str | None = None
    max_upload: int = DEFAULT_MAX_UPLOAD


class Studio:
    """The studio's server (module docstring). `url` once started."""

    def __init__(self, settings: StudioSettings) -> None:
        self.settings = settings
        self.ws = Workspace(settings.workspace)
        self.jobs = Jobs(self.ws.root / "jobs")
        self.tuner = Tuner()
        self._histories: dict[Path, tuple] = {}
        self.loopback = is_loopback(settings.host)
        self.token = settings.token or (None if self.loopback else secrets.token_urlsafe(18))
        self.port = settings.port
        self._server: GuardedServer | None = None
        page = resources.files("swapstream.pipeline.studio").joinpath("data/studio.html")
        self._page = page.read_text("utf-8")

    @property
    def url(self) -> str:
        return page_url(self.settings.host, self.port, self.token)

    async def start(self) -> None:
        """Listen and serve (on the running loop). OutputError when the port cannot be had."""
        quiet_logs()
        sock = listen(self.settings.host, self.settings.port)
        self.port = sock.getsockname()[1]
        app = web.Application(client_max_size=1 << 20)
        self._server = GuardedServer(app)
        guard = access_guard(self.token, self.loopback, lambda: self.port, "swapstream studio")
        app.middlewares.extend([self._server.busy, guard, _errors])
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/api/state", self._state)
        r.add_get("/api/faces", self._faces)
        r.add_get("/api/model", self._model)
        r.add_get("/api/log", self._log)
        r.add_get("/file", self._file)
        r.add_post("/api/upload", self._upload)
        r.add_post("/api/add", self._add)
        r.add_post("/api/extract", self._extract)
        r.add_post("/api/sort", self._sort)
        r.add_post("/api/train", self._train)
        r.add_post("/api/convert", self._convert)
        r.add_post("/api/delete", self._delete)
        r.add_post("/api/undo", self._undo)
        r.add_post("/api/stop", self._stop)
        r.add_post("/api/tune", self._tune)
        r.add_post("/api/rerun", self._rerun)
        r.add_get("/api/queue", self._queue)
        r.add_post("/api/queue/cancel", self._queue_cancel)
        r.add_post("/api/live", self._live)
        r.add_get("/api/coverage", self._coverage)
        r.add_post("/api/settings", self._save_settings)
        await self._server.start(sock)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        await _off_loop(self.tuner.close)

    # -------------------------------------------------------------------------------- reads
    async def _index(self, _r: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html")

    async def _state(self, _r: web.Request) -> web.Response:
        ws = self.ws
        state = await _off_loop(lambda: {
            "workspace": str(ws.root), "sources": ws.sources(), "facesets": ws.facesets(),
            "models": ws.models(), "outputs": ws.outputs(), "settings": ws.settings(),
            "jobs": self.jobs.all()[:50]})
        return web.json_response(state)

    async def _faces(self, r: web.Request) -> web.Response:
        name = r.query.get("faceset", "")
        return web.json_response({"faceset": name, "faces": await _off_loop(self.ws.faces, name)})

    async def _model(self, r: web.Request) -> web.Response:
        folder = self.ws.path(f"models/{check_name(r.query.get('name', ''), 'model')}", must_exist=True)
        rows = await _off_loop(self._history, folder)
        return web.json_response({"name": folder.name, "history": rows[-2000:],
                                  "preview": (folder / "preview.png").is_file(),
                                  "curve": (folder / CURVE).is_file(),
                                  "checkpoint": (folder / "model.json").is_file(),
                                  "checkpoints": await _off_loop(_checkpoints, folder)})

    def _history(self, folder: Path) -> list[dict]:
        """history.jsonl's rows, read again only when the file changed (the page asks every second
        or three while a training runs; a long run's history is megabytes)."""
        path = folder / "history.jsonl"
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_mtime_ns, st.st_size)
        cached = self._histories.get(path)
        if cached is None or cached[0] != key:
            rows = read_history(folder)
            if len(rows) > 2000:  # the curve's shape: every n-th row, and the newest
                rows = rows[::len(rows) // 2000 + 1] + rows[-1:]
            cached = self._histories[path] = (key, rows)
        return cached[1]

    async def _log(self, r: web.Request) -> web.Response:
        return web.json_response({"log": await _off_loop(self.jobs.log_tail, r.query.get("id", ""))})

    async def _file(self, r: web.Request) -> web.StreamResponse:
        path = self.ws.path(r.query.get("path", ""), must_exist=True)
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXT + VIDEO_EXT:
            raise SwapstreamError(f"{r.query.get('path')} is not an image or a video of the workspace")
        return web.FileResponse(path)

    # ------------------------------------------------------------------------------- writes
    async def _upload(self, r: web.Request) -> web.Response:
        """Files of a multipart body into sources/, each at most max_upload bytes: one over the
        limit is removed and refused (413), nothing half-written is left."""
        reader = await r.multipart()
        saved = []
        while (part := await reader.next()) is not None:
            if not part.filename:
                continue
            name = safe_name(Path(part.filename.replace("\\", "/")).name)
            if Path(name).suffix.lower() not in VIDEO_EXT + IMAGE_EXT:
                raise SwapstreamError(f"{name}: not a video or photo ({', '.join(VIDEO_EXT + IMAGE_EXT)})")
            dest = self.ws.path(f"sources/{name}")
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".upload", dir=dest.parent)
            tmp = Path(tmp_name)
            size = 0
            try:
                with os.fdopen(fd, "wb") as f:
                    while chunk := await part.read_chunk(1 << 20):
                        size += len(chunk)
                        if size > self.settings.max_upload:
                            raise web.HTTPRequestEntityTooLarge(
                                max_size=self.settings.max_upload, actual_size=size,
                                text=json.dumps({"error": f"{name} is larger than the studio's upload limit "
                                                          f"({self.settings.max_upload} bytes); copy it into "
                                                          f"{self.ws.root / 'sources'} instead"}),
                                content_type="application/json")
                        f.write(chunk)
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
            saved.append(self.ws.rel(dest))
        return web.json_response({"saved": saved})

    async def _add(self, r: web.Request) -> web.Response:
        """A video or photo of this machine copied into sources/ (no upload of a big file through the
        browser). Only on loopback: through a token, anyone could copy another user's files in."""
        if not self.loopback:
            raise SwapstreamError("adding a file by its path works only when the studio is bound to "
                                  "127.0.0.1; upload it, or copy it into the workspace's sources/ folder")
        raw = (await _body(r)).get("path")
        src = Path(str(raw or "")).expanduser()
        if not src.is_absolute() or not src.is_file() or src.suffix.lower() not in VIDEO_EXT + IMAGE_EXT:
            raise SwapstreamError(f"{raw!r} is not a video or photo on this machine; give its full path "
                                  f"({', '.join(VIDEO_EXT + IMAGE_EXT)})")
        dest = self.ws.path(f"sources/{safe_name(src.name)}")

        def copy() -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".copy", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        try:
            await _off_loop(copy)
        except OSError as err:
            raise SwapstreamError(f"cannot copy {src} ({err.strerror or err}); check it is readable and the "
                                  "workspace has room") from None
        return web.json_response({"saved": [self.ws.rel(dest)]})

    async def _extract(self, r: web.Request) -> web.Response:
        body = await _body(r)
        sources = [self._media(s, VIDEO_EXT + IMAGE_EXT, folders=True) for s in _list(body, "sources")]
        faceset = check_name(body.get("faceset", ""), "faceset")
        every = _int(body, "every", 1, 1, 100)
        out = self.ws.rel(self.ws.path(f"facesets/{faceset}"))
        argv = ["extract", *sources, "-o", out, "--every", str(every)]
        if body.get("like"):  # only this person's faces: a faceset of them, or a photo or video
            like = body["like"]
            if str(like).startswith("sources/"):
                argv += ["--like", self._media(like, VIDEO_EXT + IMAGE_EXT)]
            else:
                folder = self.ws.path(f"facesets/{check_faceset(like)}", must_exist=True)
                argv += ["--like", self.ws.rel(folder)]
        return self._job("extract", f"extract {faceset}", argv)

    async def _sort(self, r: web.Request) -> web.Response:
        faceset = check_faceset((await _body(r)).get("faceset", ""))
        self.ws.path(f"facesets/{faceset}", must_exist=True)
        return self._job("sort", f"sort {faceset}", ["sort", f"facesets/{faceset}"])

    async def _train(self, r: web.Request) -> web.Response:
        body = await _body(r)
        a, b = (check_faceset(body.get(k, "")) for k in ("a", "b"))
        for f in (a, b):
            self.ws.path(f"facesets/{f}", must_exist=True)
        model = check_name(body.get("model", ""), "model")
        self.ws.path(f"models/{model}")  # no symbolic link on the way
        preset = body.get("preset", "lite64")
        if preset not in PRESETS:
            raise SwapstreamError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
        steps = _int(body, "steps", 1000, 1, 10_000_000)
        every = max(1, min(250, steps // 4))
        argv = ["train", "--a", f"facesets/{a}", "--b", f"facesets/{b}", "-o", f"models/{model}",
                "--preset", preset, "--steps", str(steps), "--save-every", str(every),
                "--preview-every", str(every), "--log-every", str(max(1, min(10, steps // 20)))]
        address = str(body.get("address") or "").strip()
        if body.get("runner") == "ray":  # Ray Train: a local Ray, or the cluster at address
            argv += ["--runner", "ray"] + (["--address", _address(address)] if address else [])
        else:
            argv += ["--runner", "local"]
        if body.get("resume"):
            argv.append("--resume")
        return self._job("train", f"train {model}", argv)

    async def _convert(self, r: web.Request) -> web.Response:
        body = await _body(r)
        inputs = [self._media(s, VIDEO_EXT, folders=True) for s in _list(body, "inputs")]
        model = check_name(body.get("model", ""), "model")
        self.ws.path(f"models/{model}/model.json", must_exist=True)
        self.ws.path("outputs/.swapstream-queue.json")  # no symbolic link on the way
        argv = ["convert", *inputs, "-o", "outputs", "--model", f"models/{model}"]
        parallel = _int(body, "parallel", 1, 1, 256)
        address = str(body.get("address") or "").strip()
        if parallel > 1:  # side by side, each file a Ray task (a local Ray, or the cluster at address)
            argv += ["--parallel", str(parallel)] + (["--address", _address(address)] if address else [])
        elif address:  # one file at a time, each spread over the cluster by the Ray runner
            argv += ["--runner", "ray", "--address", _address(address)]
        if body.get("settings"):
            name = check_name(body["settings"], "settings")
            argv += ["--config", self.ws.rel(self.ws.path(f"settings/{name}.yaml", must_exist=True))]
        return self._job("convert", f"convert {len(inputs)} file(s) with {model}", argv)

    async def _tune(self, r: web.Request) -> web.Response:
        body = await _body(r)
        video = self.ws.path(self._media(body.get("video", ""), VIDEO_EXT))
        model = self.ws.path(f"models/{check_name(body.get('model', ''), 'model')}", must_exist=True)
        at = body.get("time", 0.0)
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise SwapstreamError("time must be a number of seconds")
        values = self._references(body.get("settings") or {}, lambda path: str(path))
        return web.json_response(await _off_loop(self.tuner.render, video, model, float(at), values))

    def _references(self, values: dict, spell) -> dict:
        """`values` with identity.only's references (workspace paths: a faceset, a photo or a video)
        checked and spelled by spell(absolute path)."""
        identity = values.get("identity") if isinstance(values, dict) else None
        if not isinstance(identity, dict) or not identity.get("only"):
            return values
        refs = identity["only"] if isinstance(identity["only"], list) else [identity["only"]]
        only = [spell(self.ws.path(str(r), must_exist=True)) for r in refs]
        return {**values, "identity": {**identity, "only": only}}

    async def _save_settings(self, r: web.Request) -> web.Response:
        body = await _body(r)
        name = check_name(body.get("name", ""), "settings")
        path = self.ws.path(f"settings/{name}.yaml")
        # references relative to the file, as convert --config and live --config read them
        values = self._references(body.get("settings") or {},
                                  lambda ref: os.path.relpath(ref, self.ws.root / "settings"))
        await _off_loop(save_settings, path, values)
        return web.json_response({"saved": self.ws.rel(path)})

    async def _delete(self, r: web.Request) -> web.Response:
        body = await _body(r)
        n = await _off_loop(self.ws.delete_faces, body.get("faceset", ""), _list(body, "faces"))
        return web.json_response({"deleted": n})

    async def _undo(self, r: web.Request) -> web.Response:
        n = await _off_loop(self.ws.undo, (await _body(r)).get("faceset", ""))
        return web.json_response({"restored": n})

    async def _stop(self, r: web.Request) -> web.Response:
        return web.json_response(self.jobs.stop((await _body(r)).get("id", "")))

    async def _rerun(self, r: web.Request) -> web.Response:
        """A job that ended (failed, stopped, interrupted) started again with the same command: a
        conversion queue skips the finished files and resumes the interrupted one from its
        segments; a training run gets --resume (it continues from its last checkpoint)."""
        job = self.jobs.get((await _body(r)).get("id", ""))
        if job["state"] == "running" or (job["state"] == "done" and job["kind"] != "convert"):
            raise SwapstreamError(f"{job['title']} is {job['state']}; only a job that ended early can "
                                  "run again")
        argv = list(job["argv"][1:])
        out = _output_of(argv)
        # from its last checkpoint; one that stopped before its first checkpoint starts again
        checkpoint = out is not None and (self.ws.root / out / "model.json").is_file()
        if job["kind"] == "train" and "--resume" not in argv and checkpoint:
            argv.append("--resume")
        return self._job(job["kind"], job["title"], argv)

    async def _queue(self, _r: web.Request) -> web.Response:
        def read() -> list[dict]:
            path = queue_path(self.ws.root / "outputs")
            if not path.is_file():
                return []
            now, out = time.time(), []
            for j in JobQueue(path).jobs():
                eta = None
                if j.state == "running" and j.started and 0.02 < j.progress < 1:
                    eta = round((now - j.started) * (1 - j.progress) / j.progress)
                out.append({"id": j.id, "input": Path(j.input).name, "output": Path(j.output).name,
                            "state": j.state, "progress": j.progress, "error": j.error, "eta_s": eta,
                            "attempts": j.attempts})
            return out

        return web.json_response({"files": await _off_loop(read)})

    async def _queue_cancel(self, r: web.Request) -> web.Response:
        jid = (await _body(r)).get("id", "")
        if not isinstance(jid, str) or not jid.isalnum():
            raise SwapstreamError("no such file in the queue; reload the page")
        job = await _off_loop(request_cancel, queue_path(self.ws.root / "outputs"), jid)
        return web.json_response({"id": job.id, "state": job.state})

    async def _live(self, r: web.Request) -> web.Response:
        body = await _body(r)
        model = check_name(body.get("model", ""), "model")
        self.ws.path(f"models/{model}/model.json", must_exist=True)
        camera = str(body.get("camera") or "browser").strip()
        argv = ["live", "--model", f"models/{model}", "--serve", f"{self.settings.host}:0"]
        if camera == "browser" or re.fullmatch(r"\d{1,2}|/dev/video\d{1,2}", camera):
            argv += ["--camera", camera]
        else:  # a video of the workspace, played as a camera
            argv += ["--camera", self._media(camera, VIDEO_EXT), "--loop"]
        if body.get("settings"):
            name = check_name(body["settings"], "settings")
            argv += ["--config", self.ws.rel(self.ws.path(f"settings/{name}.yaml", must_exist=True))]
        return self._job("live", f"live with {model}", argv)

    async def _coverage(self, r: web.Request) -> web.Response:
        faceset = check_faceset(r.query.get("faceset", ""))
        folder = self.ws.path(f"facesets/{faceset}", must_exist=True)

        def measure() -> dict:
            c = faceset_coverage(folder, self.ws.faces(faceset))
            return {"line": c.line(), "warnings": c.warnings()}

        return web.json_response(await _off_loop(measure))

    def _job(self, kind: str, title: str, argv: list[str]) -> web.Response:
        """Start a job; refused while another running job writes the same -o (two extracts into one
        faceset, two trainings of one model would overwrite each other's files)."""
        out = _output_of(argv)
        if out is not None:
            for other in self.jobs.all():
                if other["state"] == "running" and _output_of(other["argv"]) == out:
                    raise SwapstreamError(f"{other['title']} is writing {out} already; wait for it or "
                                          "stop it")
        return web.json_response(self.jobs.start(kind, title, argv, self.ws.root))

    def _media(self, rel: str, extensions: tuple[str, ...], folders: bool = False) -> str:
        """A workspace path to a video or photo (by extension; a playlist or a list file could make
        FFmpeg read outside the workspace), or with `folders` a folder of them; its relative path."""
        path = self.ws.path(rel, must_exist=True)
        if not (path.is_file() and path.suffix.lower() in extensions) and not (folders and path.is_dir()):
            kinds = ", ".join(extensions) + (" or a folder" if folders else "")
            raise SwapstreamError(f"{rel} is not a video or photo the studio takes ({kinds})")
        return self.ws.rel(path)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """A user's mistake (SwapstreamError) is one line the page shows: {"error": ...}, 400."""
    try:
        return await handler(request)
    except SwapstreamError as err:
        return web.json_response({"error": str(err)}, status=400)


async def _off_loop(fn, *args):
    """Run `fn` (file system work) off the event loop, so the page never waits behind it."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise SwapstreamError("the body must be a JSON object")
    return body


def _list(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SwapstreamError(f"{key}: choose at least one")
    return value


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SwapstreamError(f"{key} must be a whole number from {lo} to {hi}")
    return value


def _output_of(argv: list[str]) -> str | None:
    """What a job's command writes: its -o value (None without one)."""
    return argv[argv.index("-o") + 1] if "-o" in argv[:-1] else None


def _checkpoints(folder: Path) -> list[dict]:
    """A model's checkpoints, newest first: the one in its folder (what convert and live use) and
    those a Ray Train run keeps in <folder>.train/<run>/checkpoint_* ({where, step, saved})."""
    from swapstream.training.runstore import checkpoint_dirs, run_name

    found = []
    for d in [folder, *checkpoint_dirs(Path(f"{folder}.train") / run_name(folder))]:
        meta = d / "model.json"
        try:
            step = json.loads(meta.read_text()).get("step")
        except (OSError, ValueError):
            continue
        where = d.name if d != folder else "model"
        found.append({"where": where, "step": step, "saved": meta.stat().st_mtime})
    return sorted(found, key=lambda c: -c["saved"])


def _address(text: str) -> str:
    """A Ray cluster address the page gave: HOST:PORT or ray://HOST:PORT, nothing else."""
    if not re.fullmatch(r"(ray://)?[A-Za-z0-9.-]+(:\d{1,5})?", text):
        raise SwapstreamError(f"cluster address {text!r} is not HOST:PORT or ray://HOST:PORT")
    return text


def serve(settings: StudioSettings, say=print) -> None:
    """Run the studio until Ctrl-C (or SIGTERM): jobs that run keep running, and the next studio
    on the same workspace shows how they ended."""
    studio = Studio(settings)

    async def main() -> None:
        await studio.start()
        say(f"studio: workspace {studio.ws.root}")
        say(f"studio: open {studio.url}")
        try:
            await asyncio.Event().wait()
        finally:
            await studio.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        say("studio: stopped (running jobs go on; the next studio shows how they end)")
