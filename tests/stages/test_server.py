"""The web page's server under hostile load: a real WebSink in a child process with a 1024-file
limit, real TCP connections that never send a request, a real viewer request after them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

from tests.procs import launched

CHILD = textwrap.dedent("""
    import os, sys, threading, time
    from swapstream.stages.sinks.controls import Controls
    from swapstream.stages.sinks.web import WebSettings, WebSink
    sink = WebSink(WebSettings("127.0.0.1", 0), Controls(), dict)
    sink.setup()
    print(sink.port, flush=True)
    fails, stop = [], threading.Event()
    def dups():  # what detect does around MediaPipe: os.dup(2) (EMFILE ended sessions here)
        while not stop.is_set():
            try:
                os.close(os.dup(2))
            except OSError as e:
                fails.append(e.errno)
            time.sleep(0.005)
    threading.Thread(target=dups, daemon=True).start()
    sys.stdin.readline()
    stop.set()
    server = sink._server
    print(json.dumps({"dup_failures": len(fails), "open": server.open_connections,
                      "evicted": server.evicted, "refused": server.refused}), flush=True)
    sink.close()
""").replace("import os,", "import json, os,")


def test_1100_idle_connections_under_a_1024_file_limit_leave_the_page_serving():
    # 1024 open files, soft and hard (raising the soft limit cannot help here)
    child = subprocess.Popen(launched([sys.executable, "-c", CHILD], RLIMIT_NOFILE=(1024, 1024)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        for _ in range(1100):  # connect and send nothing, as the attack did
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            idle.append(s)
        time.sleep(0.5)  # the server accepts them all (and closes what is over its cap)
        assert child.poll() is None, child.stderr.read()
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<title>swapstream live</title>" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
            assert json.loads(r.read())["viewers"] == 0
        took = time.monotonic() - t0
        out, err = child.communicate("\n", timeout=20)
    finally:
        for s in idle:
            s.close()
        if child.poll() is None:
            child.kill()
            child.communicate()
    facts = json.loads(out.strip().splitlines()[-1])
    assert child.returncode == 0 and "Traceback" not in err, err
    assert facts["dup_failures"] == 0, facts  # no other thread ran out of files
    assert facts["open"] <= 128 and facts["evicted"] >= 1100 - 128 - 2, facts
    assert took < 3.0, f"a viewer waited {took:.1f} s behind idle connections"


def test_a_connection_that_sends_no_request_is_closed_after_the_timeout():
    from swapstream.stages.sinks.controls import Controls
    from swapstream.stages.sinks.web import WebSettings, WebSink

    sink = WebSink(WebSettings("127.0.0.1", 0), Controls(), dict)
    sink.setup()
    try:
        s = socket.create_connection(("127.0.0.1", sink.port), timeout=15)
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0")  # a request's headers, never finished
        assert s.recv(100) == b""  # closed by the server
        took = time.monotonic() - t0
        s.close()
    finally:
        sink.close()
    assert took < 12.0, f"a half-sent request kept its connection {took:.1f} s"


def test_the_soft_open_file_limit_is_raised_to_the_hard_one():
    code = ("import resource; from swapstream.core.process import prepare_process; prepare_process(); "
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run(launched([sys.executable, "-c", code], RLIMIT_NOFILE=(1024, 4096)),
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4096", "4096"]
