"""python-tuf's ngclient as an independent client of `upgradefs serve`.

Each test talks to a real server process (free port on 127.0.0.1, temporary
state and publish directories, a fresh key from `upgradefs keygen`).  The only
trust anchor handed to python-tuf is `1.root.json` fetched over HTTP and checked
against the server id printed by keygen (base32 of its SHA-256), exactly as a
node checks `HOST:PORT,ID`.

The attack tests play the attacker by editing the server's state directory
(`metadata/*.json`, `blobs/sha256/xx/<hex>`), which the server reads from disk
on every request, and restore what they changed afterwards.

Environment: UPGRADEFS_BIN (path to the binary, required; Tests/interop/run.sh
sets it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadError,
    LengthOrHashMismatchError,
    RepositoryError,
    UnsignedMetadataError,
)
from tuf.ngclient import Updater

BIN = os.environ.get("UPGRADEFS_BIN", "")
START_TIMEOUT = 30.0
PUBLISH_TIMEOUT = 60.0
BIG_SIZE = 3 * 1024 * 1024 + 12345  # ~3 MiB, deliberately not a multiple of any block size


def server_id_of(root_bytes: bytes) -> str:
    """DESIGN.md: base32 (RFC 4648), lowercase, no padding, of SHA-256 of 1.root.json."""
    return base64.b32encode(hashlib.sha256(root_bytes).digest()).decode().lower().rstrip("=")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class Server:
    """One `upgradefs serve` process with its own key, state and publish dirs."""

    def __init__(self, base: Path):
        if not BIN or not os.access(BIN, os.X_OK):
            pytest.fail(f"UPGRADEFS_BIN is not an executable: {BIN!r}")
        self.base = base
        self.key = base / "server.key"
        self.state = base / "state"
        self.publish_dir = base / "publish"
        self.staging = base / "staging"
        self.log_path = base / "serve.log"
        for d in (self.state, self.publish_dir, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        kg = subprocess.run(
            [BIN, "keygen", "--out", str(self.key)],
            capture_output=True, text=True, timeout=60,
        )
        assert kg.returncode == 0, f"keygen failed ({kg.returncode}): {kg.stderr}"
        lines = kg.stdout.splitlines()
        assert len(lines) == 1, f"keygen must print exactly one line, got {kg.stdout!r}"
        self.server_id = lines[0].strip()
        assert len(self.server_id) == 52, f"server id {self.server_id!r} is not 52 chars"
        mode = self.key.stat().st_mode & 0o777
        assert mode == 0o600, f"key file mode is {oct(mode)}, expected 0o600"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    # -- process -------------------------------------------------------------
    def start(self) -> None:
        self.port = free_port()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--key", str(self.key), "--state", str(self.state),
             "--publish", str(self.publish_dir), "--listen", f"127.0.0.1:{self.port}",
             "--settle-ms", "200"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if http_get(self.url("/healthz"), timeout=2).strip() == b"ok":
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not healthy after {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by PID, never by name
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        with contextlib.suppress(Exception):
            self._log.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- HTTP ----------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def metadata_url(self) -> str:
        return self.url("/metadata/")

    @property
    def targets_url(self) -> str:
        return self.url("/targets/")

    def trusted_root(self) -> bytes:
        """Fetch 1.root.json and accept it only if it matches the server id."""
        data = http_get(self.url("/metadata/1.root.json"))
        assert server_id_of(data) == self.server_id, "1.root.json does not match the server id"
        return data

    # -- publishing ----------------------------------------------------------
    def publish(self, name: str, version: int, files: dict[str, bytes],
                description: str = "interop test bundle") -> None:
        """Build the bundle in staging, copy it into the publish dir, wait for the marker."""
        src = self.staging / name
        if src.exists():
            shutil.rmtree(src)
        (src / "payload").mkdir(parents=True)
        (src / "upgrade.toml").write_text(
            f'class = "demo"\nversion = {version}\ndescription = "{description}"\n'
        )
        for rel, data in files.items():
            p = src / "payload" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        shutil.copytree(src, self.publish_dir / name)
        published = self.publish_dir / f"{name}.published"
        rejected = self.publish_dir / f"{name}.rejected"
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        while not published.exists():
            if rejected.exists():
                pytest.fail(f"bundle {name} rejected: {rejected.read_text(errors='replace')}")
            if self.proc is None or self.proc.poll() is not None:
                pytest.fail(f"serve died while publishing {name}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no marker for {name} after {PUBLISH_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.1)

    # -- state dir (attacker's view) ----------------------------------------
    def blob_path(self, data: bytes) -> Path:
        h = hashlib.sha256(data).hexdigest()
        p = self.state / "blobs" / "sha256" / h[:2] / h
        assert p.is_file(), f"blob {p} not in the content store"
        return p

    def newest(self, role: str) -> Path:
        """Highest N.<role>.json in the state dir."""
        md = self.state / "metadata"
        versions = [int(p.name.split(".")[0]) for p in md.glob(f"*.{role}.json")
                    if p.name.split(".")[0].isdigit()]
        assert versions, f"no {role} metadata in {md}"
        return md / f"{max(versions)}.{role}.json"

    def updater(self, workdir: Path, root: bytes | None = None) -> Updater:
        md = workdir / "metadata"
        md.mkdir(parents=True, exist_ok=True)
        (workdir / "targets").mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(md),
            metadata_base_url=self.metadata_url,
            target_dir=str(workdir / "targets"),
            target_base_url=self.targets_url,
            bootstrap=root if root is not None else self.trusted_root(),
        )


@contextlib.contextmanager
def restored(*paths: Path):
    """Remember the bytes and mode of files, give them back afterwards (in place)."""
    saved = {p: (p.read_bytes(), p.stat().st_mode & 0o7777) for p in paths}
    try:
        yield
    finally:
        for p, (data, mode) in saved.items():
            os.chmod(p, mode | 0o200)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, mode)


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

BUNDLE1 = {
    "data.bin": os.urandom(BIG_SIZE),
    "hello.txt": b"hello, upgradefs\n",
    "empty": b"",
    "conf/app.toml": b'name = "demo"\nport = 8080\n',
}


@pytest.fixture
def tmp_base():
    d = Path(tempfile.mkdtemp(prefix="upgradefs-interop-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """One server for the module with bundle 1 published; tests restore what they edit."""
    base = Path(tempfile.mkdtemp(prefix="upgradefs-interop-srv-"))
    srv = Server(base)
    try:
        srv.start()
        srv.publish("demo-v1", 1, BUNDLE1)
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server_alive(server):
    """Check the shared server is still up and report its log if a test broke it."""
    assert server.proc is not None and server.proc.poll() is None, server.log_tail()
    yield server
    assert server.proc.poll() is None, f"serve died during the test:\n{server.log_tail()}"


# ---------------------------------------------------------------------------
# the honest path
# ---------------------------------------------------------------------------

def test_server_id_matches_root_and_v1_id(server_alive):
    srv = server_alive
    root = http_get(srv.url("/metadata/1.root.json"))
    assert server_id_of(root) == srv.server_id
    assert http_get(srv.url("/v1/id")).decode().strip() == srv.server_id
    signed = json.loads(root)["signed"]
    assert signed["_type"] == "root" and signed["version"] == 1
    assert signed["consistent_snapshot"] is True


def test_ngclient_downloads_and_verifies_every_file(server_alive, tmp_base):
    srv = server_alive
    up = srv.updater(tmp_base)
    up.refresh()
    for rel, data in BUNDLE1.items():
        info = up.get_targetinfo(f"1/payload/{rel}")
        assert info is not None, f"1/payload/{rel} not in targets metadata"
        assert info.length == len(data)
        assert info.hashes["sha256"] == hashlib.sha256(data).hexdigest()
        out = up.download_target(info, str(tmp_base / "dl" / rel.replace("/", "_")))
        assert Path(out).read_bytes() == data, f"bytes of {rel} differ from the source"
    manifest = up.get_targetinfo("1/upgrade.toml")
    assert manifest is not None, "1/upgrade.toml not a target"
    assert up.get_targetinfo("1/payload/does-not-exist") is None


def test_root_not_matching_server_id_is_refused(server_alive):
    """Our own bootstrap rule: a 1.root.json whose digest is not the id is not trusted."""
    srv = server_alive
    root_file = srv.state / "metadata" / "1.root.json"
    with restored(root_file):
        doc = json.loads(root_file.read_bytes())
        doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
        root_file.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        with pytest.raises(AssertionError, match="does not match the server id"):
            srv.trusted_root()


# ---------------------------------------------------------------------------
# attacks on content
# ---------------------------------------------------------------------------

def test_flipped_byte_in_blob_is_rejected(server_alive, tmp_base):
    srv = server_alive
    data = BUNDLE1["data.bin"]
    blob = srv.blob_path(data)
    up = srv.updater(tmp_base)
    info = up.get_targetinfo("1/payload/data.bin")
    assert info is not None
    with restored(blob):
        os.chmod(blob, 0o600)
        with open(blob, "r+b") as f:
            f.seek(len(data) // 2)
            b = f.read(1)
            f.seek(len(data) // 2)
            f.write(bytes([b[0] ^ 0x01]))
        assert blob.stat().st_size == len(data)
        # python-tuf's check is LengthOrHashMismatchError; a server that notices the
        # corruption itself and fails the transfer (DownloadError) is also safe.
        with pytest.raises((LengthOrHashMismatchError, DownloadError)) as exc:
            up.download_target(info, str(tmp_base / "flipped"))
        print(f"flipped byte -> {type(exc.value).__name__}: {exc.value}")
    # restored: the honest download works again
    out = up.download_target(info, str(tmp_base / "after"))
    assert Path(out).read_bytes() == data


def test_truncated_blob_is_rejected(server_alive, tmp_base):
    srv = server_alive
    data = BUNDLE1["data.bin"]
    blob = srv.blob_path(data)
    up = srv.updater(tmp_base)
    info = up.get_targetinfo("1/payload/data.bin")
    assert info is not None
    with restored(blob):
        os.chmod(blob, 0o600)
        os.truncate(blob, len(data) - 1000)
        with pytest.raises((LengthOrHashMismatchError, DownloadError)) as exc:
            up.download_target(info, str(tmp_base / "truncated"))
        print(f"truncated blob -> {type(exc.value).__name__}: {exc.value}")
    out = up.download_target(info, str(tmp_base / "after"))
    assert Path(out).read_bytes() == data


def test_substituted_blob_same_length_is_rejected(server_alive, tmp_base):
    """Another file's bytes (same length, valid content elsewhere) under the target's name."""
    srv = server_alive
    data = BUNDLE1["data.bin"]
    blob = srv.blob_path(data)
    up = srv.updater(tmp_base)
    info = up.get_targetinfo("1/payload/data.bin")
    with restored(blob):
        os.chmod(blob, 0o600)
        blob.write_bytes(os.urandom(len(data)))
        with pytest.raises((LengthOrHashMismatchError, DownloadError)):
            up.download_target(info, str(tmp_base / "substituted"))


# ---------------------------------------------------------------------------
# attacks on metadata
# ---------------------------------------------------------------------------

def _tamper(path: Path, edit) -> None:
    doc = json.loads(path.read_bytes())
    edit(doc["signed"])
    os.chmod(path, (path.stat().st_mode & 0o7777) | 0o200)
    # canonical-ish JSON, signatures untouched
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def _bump_target_length(signed):
    targets = signed["targets"]
    key = "1/payload/data.bin"
    assert key in targets, f"{key} missing from targets metadata"
    targets[key]["length"] += 1


def test_tampered_targets_metadata_is_rejected(server_alive, tmp_base):
    srv = server_alive
    path = srv.newest("targets")
    root = srv.trusted_root()
    with restored(path):
        _tamper(path, _bump_target_length)
        up = srv.updater(tmp_base / "c1", root)
        with pytest.raises(RepositoryError) as exc:
            up.refresh()
        print(f"tampered {path.name} -> {type(exc.value).__name__}: {exc.value}")
        assert isinstance(exc.value, (UnsignedMetadataError, LengthOrHashMismatchError))
    # restored: a fresh client is happy again
    srv.updater(tmp_base / "c2", root).refresh()


def test_tampered_snapshot_metadata_is_rejected(server_alive, tmp_base):
    srv = server_alive
    path = srv.newest("snapshot")
    root = srv.trusted_root()

    def edit(signed):
        signed["expires"] = "2099-01-01T00:00:00Z"

    with restored(path):
        _tamper(path, edit)
        with pytest.raises(RepositoryError) as exc:
            srv.updater(tmp_base / "c1", root).refresh()
        print(f"tampered {path.name} -> {type(exc.value).__name__}: {exc.value}")
    srv.updater(tmp_base / "c2", root).refresh()


def test_tampered_timestamp_metadata_is_rejected(server_alive, tmp_base):
    srv = server_alive
    path = srv.state / "metadata" / "timestamp.json"
    root = srv.trusted_root()

    def edit(signed):
        signed["expires"] = "2099-01-01T00:00:00Z"

    with restored(path):
        _tamper(path, edit)
        with pytest.raises(UnsignedMetadataError):
            srv.updater(tmp_base / "c1", root).refresh()
    srv.updater(tmp_base / "c2", root).refresh()


# ---------------------------------------------------------------------------
# rollback (own server: it publishes a second version)
# ---------------------------------------------------------------------------

def test_timestamp_rollback_is_rejected(tmp_base):
    srv = Server(tmp_base / "srv")
    try:
        srv.start()
        srv.publish("demo-v1", 1, {"a.txt": b"version one\n"})
        ts_file = srv.state / "metadata" / "timestamp.json"
        old_ts = ts_file.read_bytes()
        old_version = json.loads(old_ts)["signed"]["version"]

        srv.publish("demo-v2", 2, {"a.txt": b"version two\n"})
        new_ts = ts_file.read_bytes()
        new_version = json.loads(new_ts)["signed"]["version"]
        assert new_version > old_version, "publishing v2 did not advance timestamp.json"

        client = tmp_base / "client"
        root = srv.trusted_root()
        up = srv.updater(client, root)
        up.refresh()
        info = up.get_targetinfo("2/payload/a.txt")
        assert info is not None
        out = up.download_target(info, str(client / "a.txt"))
        assert Path(out).read_bytes() == b"version two\n"
        assert up._trusted_set.timestamp.version == new_version

        # the attacker serves the older (still validly signed, unexpired) timestamp
        with restored(ts_file):
            os.chmod(ts_file, (ts_file.stat().st_mode & 0o7777) | 0o200)
            ts_file.write_bytes(old_ts)
            # a client that never saw the newer one accepts it: the file is genuine
            srv.updater(tmp_base / "naive", root).refresh()
            # the client that trusts the newer one refuses it
            again = srv.updater(client)  # bootstrap: its own persisted root
            with pytest.raises(BadVersionNumberError) as exc:
                again.refresh()
            print(f"timestamp rollback -> {type(exc.value).__name__}: {exc.value}")
    finally:
        srv.stop()
