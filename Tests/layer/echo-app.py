#!/usr/bin/env python3
"""A tiny HTTP/1.1 application for the upgrade layer's tests (Tests/IntegrationTests/LayerTests.swift).

    echo-app.py PORT

Any method, keep-alive, Content-Length or chunked request bodies:
  /echo                 answers JSON: method, path, body length and SHA-256, the Upgradefs-Version it got
                        (null when none), and the port the call came from (the layer's connection)
  /download?bytes=N     answers N bytes (Content-Length), written 1 MiB at a time
  /slow?seconds=S       answers after S seconds
  /call?url=U           calls U with urllib (which honours http_proxy) and answers what U answered
"""
import hashlib, json, sys, time, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are written apart: no 40 ms delayed-ACK stall

    def log_message(self, *args):
        pass

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.serve
        raise AttributeError(name)

    def body(self):
        digest, length = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = self.rfile.read(size)
                digest.update(chunk)
                length += len(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length", "0"))
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                length += len(chunk)
                remaining -= len(chunk)
        return length, digest.hexdigest()

    def answer(self, status, data, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def serve(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        length, sha = self.body()
        if url.path == "/download":
            total = int(query["bytes"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = bytes(range(256)) * 4096
            sent = 0
            while sent < total:
                piece = block[: min(len(block), total - sent)]
                self.wfile.write(piece)
                sent += len(piece)
            return
        if url.path == "/slow":
            time.sleep(float(query["seconds"][0]))
        if url.path == "/call":
            with urllib.request.urlopen(query["url"][0], timeout=10) as response:
                return self.answer(response.status, response.read())
        self.answer(200, json.dumps({
            "method": self.command, "path": self.path, "length": length, "sha256": sha,
            "version": self.headers.get("Upgradefs-Version"), "peer-port": self.client_address[1],
        }).encode())


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
