"""Which S3 client library the lake's one storage interface (`l2_lake.store.s3.S3Store`) should use:
boto3 (today's), obstore, s3fs (fsspec) and pyarrow.fs.S3FileSystem, each doing what the interface
does, against moto's S3 server as its own process on loopback (`collector_tests.s3_server`; dummy
credentials, us-east-1, path-style addressing; nothing leaves 127.0.0.1).

Measured per client, best of `--repeat`:
- write-verified MB/s, per object size (`--sizes`, MB; default ~4 and ~40; the same bytes for every
  client: 56 KiB of os.urandom then 8 KiB of repeated JSON text, over and over, like a gzip with
  some slack): one PUT with user metadata {"sha256": hex} and, where the library can send one, an
  `x-amz-checksum-sha256` header (a single PUT, as S3Store does; pyarrow can only do multipart),
  then a GET of the whole object, hashed and compared;
- seconds to list 1,000 small objects in 40 "directories" under one prefix: the directories
  (delimiter "/") and all the keys under the prefix;
- seconds of one HEAD returning size, ETag and user metadata (what the library offers for it);
- seconds of a conditional delete (only if the ETag is still the one read): one DeleteObject with
  `If-Match` where the library can send it, else HEAD then DELETE;
- seconds to import the library, and to import it and make a client, in a fresh interpreter.
Capabilities are probed, not assumed: the PUT goes once through a small recording proxy on loopback
to see which headers the library really sends (user metadata, checksum), a boto3 HEAD checks what
the server stored, and the conditional put / delete and the errors are tried on the server.

moto is Python and keeps objects in memory, so absolute rates say more about it than about a real
store; the ratios between clients are what this is for. moto stores `x-amz-checksum-sha256` but does
not check it, and honours `If-None-Match: *` on PutObject and `If-Match` on DeleteObject, as AWS does.
A client whose library is not installed is skipped with a note.

Usage: `.venv/bin/python -m bench.store_clients [--clients boto3,obstore,s3fs,pyarrow] [--sizes 4,40]
[--repeat 3]`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.timing import timed
from collector_tests.s3_server import HOST, S3Server, start_s3_server

READ_CHUNK = 1 << 20
LIST_PREFIX = "list"
LIST_DIRS = 40
LIST_OBJECTS = 1_000
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
         "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Head:
    size: int
    etag: str | None  # None: the library does not expose it
    metadata: dict[str, str] | None  # None: the library does not return user metadata


def b64_sha256(sha_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha_hex)).decode()


# -- the clients: each does what S3Store needs with its library's own API ---------------------------------


class Client:
    name = ""
    module = ""  # what `import` loads (import time, installed or not)
    dist = ""  # the distribution whose version is printed
    make_snippet = ""  # makes a client in a fresh interpreter (import time + client); `E` is the endpoint
    atomic_delete = False  # a conditional delete in one request (If-Match)

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket

    def put(self, key: str, body: bytes, sha_hex: str) -> None:
        raise NotImplementedError

    def read_sha(self, key: str) -> str:
        """sha256 hex of the whole object, read with a GET."""
        raise NotImplementedError

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the common prefixes directly under the "directory" `prefix`."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix` (the library's natural call for it)."""
        raise NotImplementedError

    def head(self, key: str) -> Head:
        raise NotImplementedError

    def create(self, key: str, body: bytes) -> None:
        """The library's put-if-absent call (If-None-Match: *), its exception let out; NotImplementedError
        if the library cannot ask for it."""
        raise NotImplementedError

    def refused(self, exc: Exception) -> bool:
        """`exc` is the store's refusal of a conditional request (HTTP 412)."""
        return False

    def put_if_absent(self, key: str, body: bytes) -> bool:
        """True if written, False if the store refused because the key exists."""
        try:
            self.create(key, body)
        except Exception as exc:
            if self.refused(exc):
                return False
            raise
        return True

    def delete_if_match(self, key: str, etag: str) -> bool:
        """Delete only if the object's ETag is `etag`: True if deleted, False if it was not."""
        raise NotImplementedError


class Boto3Client(Client):
    """boto3 as S3Store uses it (same config and calls)."""

    name, module, dist = "boto3", "boto3", "boto3"
    make_snippet = ("boto3.session.Session().client('s3', endpoint_url=E, region_name='us-east-1', "
                    "aws_access_key_id='x', aws_secret_access_key='x')")
    atomic_delete = True

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(endpoint, bucket)
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard", "total_max_attempts": 3},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        s3={"addressing_style": "path"})
        self.s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)

    def put(self, key: str, body: bytes, sha_hex: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ChecksumSHA256=b64_sha256(sha_hex),
                           Metadata={"sha256": sha_hex}, ContentType="application/gzip")

    def read_sha(self, key: str) -> str:
        sha = hashlib.sha256()
        for chunk in self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].iter_chunks(READ_CHUNK):
            sha.update(chunk)
        return sha.hexdigest()

    def list_dirs(self, prefix: str) -> list[str]:
        prefix = prefix.rstrip("/") + "/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        return [p["Prefix"][len(prefix):].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]

    def list_keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def head(self, key: str) -> Head:
        r = self.s3.head_object(Bucket=self.bucket, Key=key)
        return Head(int(r["ContentLength"]), r["ETag"], dict(r.get("Metadata") or {}))

    def refused(self, exc: Exception) -> bool:
        return getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") == 412

    def create(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")

    def delete_if_match(self, key: str, etag: str) -> bool:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except Exception as exc:
            if self.refused(exc):
                return False
            raise
        return True


class ObstoreClient(Client):
    """obstore (Rust object_store): checksum_algorithm=sha256 makes it send x-amz-checksum-sha256."""

    name, module, dist = "obstore", "obstore", "obstore"
    make_snippet = ("obstore.store.S3Store('b', endpoint=E, region='us-east-1', access_key_id='x', "
                    "secret_access_key='x', virtual_hosted_style_request=False, client_options={'allow_http': True})")

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(endpoint, bucket)
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(bucket, endpoint=endpoint, region="us-east-1", access_key_id="testing",
                             secret_access_key="testing", virtual_hosted_style_request=False,
                             checksum_algorithm="sha256", client_options={"allow_http": True})

    def put(self, key: str, body: bytes, sha_hex: str) -> None:
        # one PUT (its default is multipart above 5 MB): the checksum is then our whole object's sha256
        self.obs.put(self.store, key, body, attributes={"sha256": sha_hex, "Content-Type": "application/gzip"},
                     use_multipart=False)

    def read_sha(self, key: str) -> str:
        sha = hashlib.sha256()
        for chunk in self.obs.get(self.store, key).stream(min_chunk_size=READ_CHUNK):
            sha.update(chunk)
        return sha.hexdigest()

    def list_dirs(self, prefix: str) -> list[str]:
        found = self.obs.list_with_delimiter(self.store, prefix.rstrip("/"))["common_prefixes"]
        return [p.rsplit("/", 1)[-1] for p in found]

    def list_keys(self, prefix: str) -> list[str]:
        # object_store's prefixes are whole path segments: "list/d0" does not match "list/d00/…"
        return [meta["path"] for batch in self.obs.list(self.store, prefix, chunk_size=1000) for meta in batch]

    def head(self, key: str) -> Head:
        # obstore.head() gives size and ETag but no user metadata; a get with head=True is one HEAD with both
        r = self.obs.get(self.store, key, options={"head": True})
        meta = r.meta
        return Head(meta["size"], meta["e_tag"], {k: v for k, v in r.attributes.items() if k != "Content-Type"})

    def refused(self, exc: Exception) -> bool:
        from obstore.exceptions import AlreadyExistsError

        return isinstance(exc, AlreadyExistsError)

    def create(self, key: str, body: bytes) -> None:
        self.obs.put(self.store, key, body, mode="create")

    def delete_if_match(self, key: str, etag: str) -> bool:
        # no precondition on delete in object_store: HEAD, then DELETE (racy)
        if self.obs.head(self.store, key)["e_tag"] != etag:
            return False
        self.obs.delete(self.store, key)
        return True


class S3fsClient(Client):
    """s3fs (fsspec on aiobotocore): extra kwargs of pipe_file go to PutObject."""

    name, module, dist = "s3fs", "s3fs", "s3fs"
    make_snippet = ("s3fs.S3FileSystem(key='x', secret='x', client_kwargs={'endpoint_url': E, "
                    "'region_name': 'us-east-1'})")

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(endpoint, bucket)
        import s3fs

        self.fs = s3fs.S3FileSystem(
            key="testing", secret="testing", use_listings_cache=False,
            client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
            config_kwargs={"s3": {"addressing_style": "path"}, "request_checksum_calculation": "when_required",
                           "response_checksum_validation": "when_required"})

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def put(self, key: str, body: bytes, sha_hex: str) -> None:
        self.fs.pipe_file(self._path(key), body, Metadata={"sha256": sha_hex}, ChecksumSHA256=b64_sha256(sha_hex),
                          ContentType="application/gzip")

    def read_sha(self, key: str) -> str:
        return hashlib.sha256(self.fs.cat_file(self._path(key))).hexdigest()

    def list_dirs(self, prefix: str) -> list[str]:
        entries = self.fs.ls(self._path(prefix.rstrip("/")), detail=True)
        return [e["name"].rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"]

    def list_keys(self, prefix: str) -> list[str]:
        folder, _, rest = prefix.rpartition("/")
        found = self.fs.find(self._path(folder), prefix=rest) if rest else self.fs.find(self._path(folder))
        return [name.removeprefix(f"{self.bucket}/") for name in found]

    def head(self, key: str) -> Head:
        # info() is a HEAD that drops the user metadata; metadata() is a second HEAD for it
        info = self.fs.info(self._path(key))
        return Head(int(info["size"]), info["ETag"], dict(self.fs.metadata(self._path(key))))

    def refused(self, exc: Exception) -> bool:
        return isinstance(exc, FileExistsError)

    def create(self, key: str, body: bytes) -> None:
        self.fs.pipe_file(self._path(key), body, mode="create")

    def delete_if_match(self, key: str, etag: str) -> bool:
        # rm_file takes no IfMatch (its kwargs are dropped): HEAD, then DELETE (racy)
        if self.fs.info(self._path(key))["ETag"] != etag:
            return False
        self.fs.rm_file(self._path(key))
        return True


class PyarrowClient(Client):
    """pyarrow.fs.S3FileSystem (Arrow's C++ AWS SDK binding)."""

    name, module, dist = "pyarrow.fs", "pyarrow.fs", "pyarrow"
    make_snippet = ("pyarrow.fs.S3FileSystem(access_key='x', secret_key='x', region='us-east-1', scheme='http', "
                    "endpoint_override=E.removeprefix('http://'))")

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(endpoint, bucket)
        from pyarrow import fs

        self.pafs = fs
        self.fs = fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                                  endpoint_override=endpoint.removeprefix("http://"))

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def put(self, key: str, body: bytes, sha_hex: str) -> None:
        # compression=None: "detect" would gzip a .gz name's bytes again; x-amz-meta-* is not among the
        # metadata keys it sends (the recording proxy shows what arrives)
        with self.fs.open_output_stream(self._path(key), compression=None,
                                        metadata={"x-amz-meta-sha256": sha_hex,
                                                  "Content-Type": "application/gzip"}) as out:
            out.write(body)

    def read_sha(self, key: str) -> str:
        sha = hashlib.sha256()
        with self.fs.open_input_stream(self._path(key), compression=None) as f:
            while chunk := f.read(READ_CHUNK):
                sha.update(chunk)
        return sha.hexdigest()

    def _infos(self, prefix: str, recursive: bool) -> list[Any]:
        selector = self.pafs.FileSelector(self._path(prefix.rstrip("/")), recursive=recursive, allow_not_found=True)
        return self.fs.get_file_info(selector)

    def list_dirs(self, prefix: str) -> list[str]:
        return [i.base_name for i in self._infos(prefix, False) if i.type == self.pafs.FileType.Directory]

    def list_keys(self, prefix: str) -> list[str]:
        return [i.path.removeprefix(f"{self.bucket}/") for i in self._infos(prefix, True)
                if i.type == self.pafs.FileType.File]

    def head(self, key: str) -> Head:
        # opening a random-access file is one HEAD; its metadata() is a fixed set of headers (ETag, no x-amz-meta)
        with self.fs.open_input_file(self._path(key)) as f:
            headers = f.metadata()
            return Head(f.size(), headers["ETag"].decode() if "ETag" in headers else None, None)

    def delete_if_match(self, key: str, etag: str) -> bool:
        if self.head(key).etag != etag:  # HEAD, then DELETE (racy)
            return False
        self.fs.delete_file(self._path(key))
        return True


CLIENTS: list[type[Client]] = [Boto3Client, ObstoreClient, S3fsClient, PyarrowClient]


# -- a recording proxy: which headers a library really sends ----------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "expect"}


class RecordingProxy:
    """Forwards every request on loopback to `upstream_port` and keeps (method, path, headers) of each."""

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                    pass
                return b"".join(parts)

            def _relay(self) -> None:
                body = self._body()
                proxy.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"content-length"}}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(HOST, upstream_port, timeout=60)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://{HOST}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- measurements -------------------------------------------------------------------------------------


def make_body(mb: float) -> bytes:
    text = b'{"ts":"2026-11-20T10:00:00.000Z","instId":"BTC-USDT-SWAP","bids":[["97000.1","1.25","0","3"]]}\n'
    filler = (text * (8192 // len(text) + 1))[:8192]
    size = int(mb * 1e6)
    blocks = [os.urandom(56 * 1024) + filler for _ in range(size // (64 * 1024) + 1)]
    return b"".join(blocks)[:size]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    return min(timed(fn)[1] for _ in range(repeat))


def write_verified(client: Client, key: str, body: bytes, sha: str) -> tuple[float, float]:
    """(PUT seconds, GET + sha256 seconds); SystemExit if the object reads back as other bytes."""
    _, put_s = timed(lambda: client.put(key, body, sha))
    got, get_s = timed(lambda: client.read_sha(key))
    if got != sha:
        raise SystemExit(f"{client.name}: {key} read back as sha256 {got[:16]}…, sent {sha[:16]}…")
    return put_s, get_s


def import_seconds(cls: type[Client], endpoint: str, repeat: int) -> tuple[float, float]:
    """Best-of-`repeat` (import, import + make a client) in a fresh interpreter (no request is made)."""
    code = (f"import time\nE = {endpoint!r}\nt0 = time.perf_counter()\nimport {cls.module}\n"
            f"t1 = time.perf_counter()\n{cls.make_snippet}\nprint(t1 - t0, time.perf_counter() - t0)")
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        runs.append(tuple(float(x) for x in out.split()))
    return min(r[0] for r in runs), min(r[1] for r in runs)


def structured_error(exc: BaseException | None) -> str:
    """HTTP status and S3 code as fields of the exception (or of its __cause__), without parsing a message."""
    if exc is None:
        return "-"
    for e, how in ((exc, "yes"), (exc.__cause__, "__cause__")):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return f"{how} {status} {response['Error'].get('Code')}"
    return f"no ({type(exc).__name__})"


def capabilities(cls: type[Client], client: Client, proxy: RecordingProxy, reference: Boto3Client) -> dict[str, str]:
    name = cls.name.replace(".", "-")
    body = b"capability probe\n" * 64
    sha = hashlib.sha256(body).hexdigest()
    caps: dict[str, str] = {}

    # headers sent on PUT (through the proxy) and what the server stored (a boto3 HEAD)
    proxy.requests.clear()
    cls(proxy.endpoint, client.bucket).put(f"cap/{name}/meta", body, sha)
    writes = [h for method, _, h in proxy.requests if method in ("PUT", "POST")]
    sent_meta = any(h.get("x-amz-meta-sha256") == sha for h in writes)
    stored = reference.head(f"cap/{name}/meta").metadata or {}
    caps["user metadata on put"] = "yes" if stored.get("sha256") == sha else ("sent, not stored" if sent_meta else "no")
    checksums = sorted({k for h in writes for k in h if k.startswith("x-amz-checksum-") or k == "content-md5"})
    whole = any(h.get("x-amz-checksum-sha256") == b64_sha256(sha) for h in writes)
    caps["checksum on put"] = "yes (sha256)" if whole else f"other: {','.join(checksums)}" if checksums else "no"
    put_requests = len(writes)

    head = client.head(f"cap/{name}/meta")
    caps["ETag exposed"] = "yes" if head.etag else "no"
    caps["metadata on HEAD"] = ("yes" if head.metadata and head.metadata.get("sha256") == sha else
                                "no" if head.metadata is None else "not returned")

    refused: Exception | None = None
    try:
        written = client.put_if_absent(f"cap/{name}/new", body)
        try:
            client.create(f"cap/{name}/new", body)  # again: the store must refuse it
        except NotImplementedError:
            raise
        except Exception as exc:
            refused = exc
        ok = written and refused is not None and client.refused(refused)
        caps["If-None-Match put"] = "yes" if ok else f"no (written {written}, then {refused!r:.60})"
    except NotImplementedError:
        caps["If-None-Match put"] = "no API"

    key = f"cap/{name}/del/obj"
    reference.put(key, body, sha)
    etag = reference.head(key).etag or ""
    kept = not client.delete_if_match(key, '"0123456789abcdef0123456789abcdef"')
    kept = kept and reference.head(key).etag == etag
    deleted = client.delete_if_match(key, etag) and not reference.list_keys(key)
    ok = "yes (If-Match)" if cls.atomic_delete else "no: HEAD+DELETE"
    caps["If-Match delete"] = ok if kept and deleted else f"failed (kept {kept}, deleted {deleted})"
    marker = reference.list_keys(f"cap/{name}/del/")
    caps["note"] = f"delete left {marker}" if marker else ""

    try:
        client.read_sha(f"cap/{name}/missing")
        missing = None
    except Exception as exc:
        missing = exc
    caps["error: 404 GET"] = structured_error(missing)
    caps["error: 412 PUT"] = structured_error(refused)

    under = client.list_keys(f"{LIST_PREFIX}/d0")  # a key prefix that ends inside a path segment
    caps["key-prefix list"] = "yes" if len(under) == LIST_OBJECTS // 4 else f"no ({len(under)} keys)"
    caps["requests per put"] = str(put_requests)
    return caps


def measure(cls: type[Client], server: S3Server, bucket: str, bodies: list[tuple[float, bytes, str]],
            proxy: RecordingProxy, reference: Boto3Client, repeat: int) -> dict[str, Any]:
    client = cls(server.endpoint, bucket)
    name = cls.name.replace(".", "-")
    writes = []
    for size, body, sha in bodies:
        runs = [write_verified(client, f"w/{name}/{size:g}.gz", body, sha) for _ in range(repeat)]
        put_s, get_s = min(runs, key=sum)
        writes.append((size, len(body) / 1e6, put_s, get_s))

    dirs = client.list_dirs(LIST_PREFIX)
    keys = client.list_keys(f"{LIST_PREFIX}/")
    if len(dirs) != LIST_DIRS or len(keys) != LIST_OBJECTS:
        raise SystemExit(f"{cls.name}: listed {len(dirs)} directories and {len(keys)} keys, "
                         f"expected {LIST_DIRS} and {LIST_OBJECTS}")
    head_key = f"w/{name}/{bodies[0][0]:g}.gz"
    head = client.head(head_key)
    if head.size != len(bodies[0][1]):
        raise SystemExit(f"{cls.name}: HEAD says {head.size} bytes, the object has {len(bodies[0][1])}")

    delete_runs = []
    for n in range(repeat):
        key = f"del/{name}/{n}"
        reference.put(key, b"x", hashlib.sha256(b"x").hexdigest())
        etag = reference.head(key).etag or ""
        deleted, seconds = timed(lambda k=key, e=etag: client.delete_if_match(k, e))
        if not deleted:
            raise SystemExit(f"{cls.name}: the conditional delete of {key} did not delete it")
        delete_runs.append(seconds)

    return {
        "writes": writes,
        "list_dirs": best_of(repeat, lambda: client.list_dirs(LIST_PREFIX)),
        "list_keys": best_of(repeat, lambda: client.list_keys(f"{LIST_PREFIX}/")),
        "head": best_of(repeat, lambda: client.head(head_key)),
        "delete": min(delete_runs),
        "import": import_seconds(cls, server.endpoint, repeat),
        "caps": capabilities(cls, client, proxy, reference),
    }


def fill_listing(reference: Boto3Client) -> None:
    per_dir = LIST_OBJECTS // LIST_DIRS
    for n in range(LIST_OBJECTS):
        body = f'{{"n": {n}}}\n'.encode()
        key = f"{LIST_PREFIX}/d{n // per_dir:02d}/o{n % per_dir:03d}.json"
        reference.s3.put_object(Bucket=reference.bucket, Key=key, Body=body)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def report(results: dict[str, dict[str, Any]], repeat: int, skipped: list[str]) -> None:
    print(f"server: moto on loopback (in memory); best of {repeat}; python {sys.version.split()[0]}")
    print("versions: " + ", ".join(f"{c.name} {version(c.dist)}" for c in CLIENTS if c.name in results)
          + f", botocore {version('botocore')}, moto {version('moto')}")
    for note in skipped:
        print(f"skipped: {note}")
    print("\n1. write-verified (PUT with metadata + checksum, then GET and compare sha256)")
    print(f"{'client':12} {'object MB':>9} {'PUT s':>8} {'GET+sha s':>10} {'total s':>8} {'MB/s':>7} "
          f"{'speed/boto3':>11}")
    base = {size: put + get for size, _, put, get in results.get("boto3", {}).get("writes", [])}
    for name, r in results.items():
        for size, mb, put, get in r["writes"]:
            ratio = f"{base[size] / (put + get):.2f}x" if size in base else "-"
            total = put + get
            print(f"{name:12} {mb:>9.1f} {put:>8.3f} {get:>10.3f} {total:>8.3f} {mb / total:>7.1f} {ratio:>11}")
    print(f"\n2-5. seconds: list ({LIST_OBJECTS} objects in {LIST_DIRS} dirs), HEAD, conditional delete, import")
    print(f"{'client':12} {'list dirs':>9} {'list keys':>9} {'HEAD':>8} {'cond.del':>8} {'import':>7} {'+client':>8}")
    for name, r in results.items():
        imp, with_client = r["import"]
        print(f"{name:12} {r['list_dirs']:>9.4f} {r['list_keys']:>9.4f} {r['head']:>8.4f} {r['delete']:>8.4f} "
              f"{imp:>7.3f} {with_client:>8.3f}")
    print("\ncapabilities (probed against the server; headers seen by a recording proxy)")
    rows = [c for c in next(iter(results.values()))["caps"] if c != "note"] if results else []
    widths = [max(len(name), *(len(r["caps"][c]) for c in rows)) for name, r in results.items()]
    print(f"{'':22} " + "  ".join(f"{name:{w}}" for name, w in zip(results, widths, strict=True)).rstrip())
    for row in rows:
        cells = (f"{r['caps'][row]:{w}}" for r, w in zip(results.values(), widths, strict=True))
        print((f"{row:22} " + "  ".join(cells)).rstrip())
    for name, r in results.items():
        if r["caps"]["note"]:
            print(f"  note {name}: {r['caps']['note']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(c.name for c in CLIENTS),
                        help="comma-separated, of: " + ", ".join(c.name for c in CLIENTS))
    parser.add_argument("--sizes", default="4,40", help="object sizes in MB (default 4,40)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    wanted = args.clients.split(",")
    chosen, skipped = [], []
    for cls in CLIENTS:
        if cls.name not in wanted:
            continue
        if importlib.util.find_spec(cls.module.split(".")[0]) is None:
            skipped.append(f"{cls.name} is not installed (pip install {cls.dist})")
            print(f"note: {skipped[-1]}; skipping it", flush=True)
        else:
            chosen.append(cls)
    # dummy credentials; no instance-metadata or config lookups, no proxy for loopback
    os.environ.update({**CREDS, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "NO_PROXY": "127.0.0.1,localhost",
                       "no_proxy": "127.0.0.1,localhost"})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    bodies = []
    for size in (float(s) for s in args.sizes.split(",")):
        body = make_body(size)
        bodies.append((size, body, hashlib.sha256(body).hexdigest()))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_s3_server(Path(tmp))
        proxy = RecordingProxy(server.port)
        try:
            os.environ["AWS_ENDPOINT_URL"] = server.endpoint  # a library that ignored our endpoint stays local
            bucket = server.create_bucket()
            reference = Boto3Client(server.endpoint, bucket)
            fill_listing(reference)
            for cls in chosen:
                print(f"measuring {cls.name} …", file=sys.stderr, flush=True)
                results[cls.name] = measure(cls, server, bucket, bodies, proxy, reference, args.repeat)
        finally:
            proxy.close()
            server.kill()
    report(results, args.repeat, skipped)


if __name__ == "__main__":
    main()
