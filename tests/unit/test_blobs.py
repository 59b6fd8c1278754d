"""Content-addressed blobs (slurmml.storage.blobs) against a real moto S3 server: keys, hashing, round trips,
dedupe, resumable multipart uploads through an endpoint that goes away, corrupt blobs, a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from slurmml.errors import SlurmmlError
from slurmml.storage.blobs import BlobStore, blob_key, part_size_for, sha256_file
from slurmml.storage.config import StorageConfig
from slurmml.storage.s3 import ObjectStore, Unreachable

MB = 2**20


def count_calls(store: ObjectStore, operation: str) -> list[int]:
    """A counter of `operation` requests the store's client sends (boto3's own event hooks)."""
    calls: list[int] = []
    store.client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(1))
    return calls


def blob_keys(store: ObjectStore) -> list[str]:
    return [info.key for info in store.list("blobs/")]


def open_uploads(store: ObjectStore) -> list[dict]:
    answer = store.client.list_multipart_uploads(Bucket=store.config.bucket, Prefix=store.key(""))
    return answer.get("Uploads") or []


def test_blob_key_names_the_digest() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert blob_key(digest) == f"blobs/sha256/{digest[:2]}/{digest}"
    for bad in ("", "abc", digest.upper(), digest + "0", "sha256:" + digest):
        with pytest.raises(SlurmmlError, match="not a sha256 digest"):
            blob_key(bad)


def test_sha256_file_reads_the_whole_file_and_reports_progress(tmp_path: Path) -> None:
    data = os.urandom(9 * MB + 17)  # more than two hash buffers, not a multiple of one
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    seen: list[int] = []
    assert sha256_file(path, seen.append) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sum(seen) == len(data) and len(seen) >= 3
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == (hashlib.sha256(b"").hexdigest(), 0)


def test_part_size_grows_so_ten_thousand_parts_hold_the_file() -> None:
    assert part_size_for(100 * MB, 16 * MB) == 16 * MB
    assert part_size_for(100 * MB, 1 * MB) == 5 * MB  # S3's smallest part
    big = 10_000 * 16 * MB + 1
    assert part_size_for(big, 16 * MB) == 17 * MB and -(-big // (17 * MB)) <= 10_000


def test_bytes_round_trip_and_the_same_bytes_are_stored_once(s3_store: ObjectStore) -> None:
    blobs = BlobStore(s3_store)
    puts = count_calls(s3_store, "PutObject")
    digest, uploaded = blobs.put_bytes(b"checkpoint bytes")
    assert digest == hashlib.sha256(b"checkpoint bytes").hexdigest() and uploaded
    assert blob_keys(s3_store) == [blob_key(digest)] and blobs.has(digest)
    assert blobs.put_bytes(b"checkpoint bytes", digest) == (digest, False)
    assert len(puts) == 1  # the second put sent nothing
    assert blobs.get_bytes(digest) == b"checkpoint bytes"
    assert blobs.get_bytes(digest, (5, 10)) == b"point"
    assert blobs.uri(digest) == f"s3://{s3_store.config.bucket}/{s3_store.config.prefix}/{blob_key(digest)}"
    with pytest.raises(SlurmmlError, match="hash to"):
        blobs.put_bytes(b"other bytes", digest)
    assert len(puts) == 1


def test_a_big_file_goes_in_parallel_parts_and_comes_back_whole(s3_store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(12 * MB + 5)
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    blobs = BlobStore(s3_store, part_size=5 * MB, workers=3, state_dir=tmp_path / "uploads")
    parts = count_calls(s3_store, "UploadPart")
    sent: list[int] = []
    digest, size, uploaded = blobs.put_file(path, progress=sent.append)
    assert (digest, size, uploaded) == (hashlib.sha256(data).hexdigest(), len(data), True)
    assert len(parts) == 3 and sum(sent) == len(data)
    assert list(s3_store.list("blobs/"))[0].size == len(data)
    assert list((tmp_path / "uploads").iterdir()) == []  # a finished upload leaves no state
    assert blobs.put_file(path) == (digest, len(data), False) and len(parts) == 3  # stored once

    got: list[int] = []
    dest = tmp_path / "out" / "model.pt"
    blobs.get_file(digest, dest, progress=got.append)  # ranged GETs of 5 MB
    assert dest.read_bytes() == data and sum(got) == len(data) and len(got) == 3
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.pt"]


def test_a_file_that_is_not_what_its_digest_says_is_not_stored(s3_store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.bin"
    path.write_bytes(os.urandom(11 * MB))
    wrong = hashlib.sha256(b"what it was when it was logged").hexdigest()
    blobs = BlobStore(s3_store, part_size=5 * MB, state_dir=tmp_path / "uploads")
    with pytest.raises(SlurmmlError, match=r"ckpt.bin changed while it was being uploaded$"):
        blobs.put_file(path, wrong)
    small = tmp_path / "small.bin"
    small.write_bytes(b"small")
    with pytest.raises(SlurmmlError, match="changed while it was being uploaded"):
        blobs.put_file(small, wrong)
    assert blob_keys(s3_store) == [] and open_uploads(s3_store) == []


class Proxy:
    """A TCP forwarder on a fixed port to an S3 server: `stop()` is the endpoint going away mid-upload (the port
    refuses, open connections drop), `start()` brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        from slurmml.devcluster.s3server import free_port

        self.target_port = target_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: Any = None

    def start(self) -> "Proxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            everything, self._sockets = [self._listener, *self._sockets], []
        for sock in everything:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def own_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A moto server of this test's own (the resume test stops the way to it)."""
    from slurmml.devcluster import s3server

    server = s3server.start(s3server.free_port(), tmp_path / "s3.log", buckets=("resume",))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.environment("resume").items():
        monkeypatch.setenv(name, value)
    yield server
    s3server.stop(server.pid)


def test_an_upload_cut_off_midway_resumes_with_the_missing_parts_only(own_server: Any, tmp_path: Path) -> None:
    data = os.urandom(40 * MB + 123)  # 9 parts of 5 MB
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    port = int(own_server.endpoint.rsplit(":", 1)[1])
    proxy = Proxy(port).start()

    def through_proxy() -> ObjectStore:  # a fresh client, as a retry in a new process would have
        return ObjectStore(StorageConfig("resume", "p", f"http://127.0.0.1:{proxy.port}"))

    state_dir = tmp_path / "uploads"
    first = BlobStore(through_proxy(), part_size=5 * MB, workers=2, state_dir=state_dir)
    done: list[int] = []

    def cut_after_three(nbytes: int) -> None:
        done.append(nbytes)
        if len(done) == 3:
            proxy.stop()

    with pytest.raises(Unreachable) as failure:
        first.put_file(path, progress=cut_after_three)
    message = str(failure.value)
    assert "\n" not in message and "does not answer" in message and "run it again to resume" in message
    direct = ObjectStore(StorageConfig("resume", "p", own_server.endpoint))
    assert blob_keys(direct) == []  # nothing under blobs/ until the upload completes
    state_file = state_dir / f"{digest}.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    state = json.loads(state_file.read_text())
    assert state["part_size"] == 5 * MB and own_server.secret_key not in state_file.read_text()
    there = direct.client.list_parts(Bucket="resume", Key=direct.key(blob_key(digest)), UploadId=state["upload_id"])
    stored = len(there.get("Parts") or [])
    assert 3 <= stored < 9

    proxy.start()
    retry_store = through_proxy()
    parts = count_calls(retry_store, "UploadPart")
    creates = count_calls(retry_store, "CreateMultipartUpload")
    progress: list[int] = []
    assert BlobStore(retry_store, part_size=5 * MB, workers=2, state_dir=state_dir).put_file(
        path, progress=progress.append) == (digest, len(data), True)
    proxy.stop()
    assert len(parts) == 9 - stored and creates == []  # only the missing parts, into the same upload
    assert sum(progress) == len(data)
    assert not state_file.exists()
    assert BlobStore(direct).get_bytes(digest) == data


def test_an_unfinished_upload_of_a_file_that_changed_size_is_refused(s3_store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(6 * MB))
    digest, _ = sha256_file(path)
    state_dir = tmp_path / "uploads"
    state_dir.mkdir()
    (state_dir / f"{digest}.json").write_text(json.dumps(
        {"upload_id": "x", "part_size": 5 * MB, "size": 7 * MB, "key": s3_store.key(blob_key(digest)),
         "store": s3_store.config.url}))
    with pytest.raises(SlurmmlError, match=r"was 7340032 bytes, not 6291456: the file changed since$"):
        BlobStore(s3_store, part_size=5 * MB, state_dir=state_dir).put_file(path, digest)


def overwrite(store: ObjectStore, digest: str, data: bytes) -> None:
    store.client.put_object(Bucket=store.config.bucket, Key=store.key(blob_key(digest)), Body=data)


def test_a_corrupt_blob_is_refused_in_one_line(s3_store: ObjectStore, tmp_path: Path) -> None:
    blobs = BlobStore(s3_store, part_size=5 * MB)
    digest, _ = blobs.put_bytes(b"the real bytes")
    overwrite(s3_store, digest, b"something else")
    gets = count_calls(s3_store, "GetObject")
    with pytest.raises(SlurmmlError) as failure:
        blobs.get_bytes(digest)
    assert str(failure.value).startswith(f"blob {digest[:12]} in {s3_store.config.url} is corrupt")
    assert "\n" not in str(failure.value) and len(gets) == 2  # fetched once more before giving up
    assert blobs.get_bytes(digest, (0, 4)) == b"some"  # a slice is the caller's to check

    dest = tmp_path / "dl" / "x.bin"
    with pytest.raises(SlurmmlError, match="is corrupt"):
        blobs.get_file(digest, dest)
    assert list(dest.parent.iterdir()) == []  # no partial file, no temporary one


@pytest.fixture
def tiny_disk(tmp_path: Path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("size", [3 * MB, 12 * MB])  # one GET, and ranged GETs
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(s3_store: ObjectStore, tiny_disk: Path,
                                                             size: int) -> None:
    data = os.urandom(size)
    blobs = BlobStore(s3_store, part_size=5 * MB)
    digest, _ = blobs.put_bytes(data)
    with pytest.raises(SlurmmlError) as failure:
        blobs.get_file(digest, tiny_disk / "big.bin")
    assert str(failure.value) == f"no space left on {tiny_disk} for {size / 1e6:.3g} MB"
    assert list(tiny_disk.iterdir()) == []


def test_a_missing_blob_is_not_found(s3_store: ObjectStore, tmp_path: Path) -> None:
    from slurmml.storage.s3 import NotFound

    digest = hashlib.sha256(b"never stored").hexdigest()
    blobs = BlobStore(s3_store)
    assert not blobs.has(digest)
    with pytest.raises(NotFound):
        blobs.get_bytes(digest)
    with pytest.raises(NotFound):
        blobs.get_file(digest, tmp_path / "x")
    assert not (tmp_path / "x").exists()
