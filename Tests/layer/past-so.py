#!/usr/bin/env python3
"""A direct past SO for the upgrade layer's tests (Tests/IntegrationTests/LayerSimulationObjectTests.swift).

Started by `upgradefs layer` as the bundle's `so/past` with the SO contract's environment (docs/REFERENCE.md,
"Simulation objects"). It answers the old version's calls by delegating them, translated, to the object at
UPGRADEFS_SO_DELEGATE: the old path /old/P becomes /P; any other path is passed on as it is. The answer gets
`X-Served-By: past SO of version V`. It writes its pid to UPGRADEFS_SO_STATE/pid (the test kills it by it) and
counts the calls it served in UPGRADEFS_SO_STATE/calls.
"""
import os, sys, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ["UPGRADEFS_SO_VERSION"]
DELEGATE = os.environ["UPGRADEFS_SO_DELEGATE"]
STATE = os.environ["UPGRADEFS_SO_STATE"]
HOST, PORT = os.environ["UPGRADEFS_SO_LISTEN"].rsplit(":", 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version, disable_nagle_algorithm = "HTTP/1.1", True
    log_message = lambda self, *args: None

    def serve(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else None
        path = self.path[len("/old"):] if self.path.startswith("/old/") else self.path
        request = urllib.request.Request(DELEGATE + path, data=body, method=self.command)
        for name in ("Content-Type", "Upgradefs-Version"):
            if name in self.headers:
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "text/plain")
        except urllib.error.HTTPError as error:
            status, data, kind = error.code, error.read(), error.headers.get("Content-Type", "text/plain")
        path = os.path.join(STATE, "calls")
        calls = int(open(path).read()) if os.path.exists(path) else 0
        with open(path + ".new", "w") as f:
            f.write(str(calls + 1))
        os.replace(path + ".new", path)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Served-By", "past SO of version " + VERSION)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = serve


server = ThreadingHTTPServer((HOST, int(PORT)), Handler)
with open(os.path.join(STATE, "pid"), "w") as f:
    f.write(str(os.getpid()))
print("past SO of version %s listening on %s:%s, delegating to %s" % (VERSION, HOST, PORT, DELEGATE), flush=True)
server.serve_forever()
