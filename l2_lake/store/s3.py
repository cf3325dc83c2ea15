"""The lake's durable home in object storage: the `s3://bucket[/prefix]` URL and `S3Store`, the bucket's
implementation of the lake's one storage interface (`l2_lake.store.home.Home`: list, stat, read,
write-verified, delete-if-unchanged), used by the collector's shipper, by the pipeline when the
shipped lake is its home (`l2_lake.store.tree.ObjectTree`) and by the readers (`l2_lake.tiers.source`).

Client: boto3 (botocore), chosen by measurement (`python -m bench.ship`, against moto's server on
loopback, best of 3): PutObject + a full GET compared by sha256 ran at 88 MB/s for a ~4 MB gzip object
and 134 MB/s for a ~40 MB one; pyarrow.fs.S3FileSystem (write + read) at 36 and 17 MB/s, 2.4x and 8.2x
slower. Both are far below the cost of the local gzip + verify of the same hour (boto3's round trip
took 0.05x and 0.03x of it, pyarrow's 0.11x and 0.22x), so throughput alone would not decide; what
does is what the shipper needs beyond speed. boto3 stores user metadata on PutObject (pyarrow keeps
only a fixed set of headers: our `sha256` metadata was dropped) and sends `ChecksumSHA256`, so S3
checks the body against our sha256 on receipt; its errors carry the HTTP status and S3 error code
(`ClientError`) instead of an `OSError` message to parse; timeouts and the retry mode are plain
settings; and it sends exactly the bytes it is given (pyarrow's `open_output_stream` defaults to
`compression="detect"` and gzips a `.gz` name's bytes a second time). moto's server depends on it
anyway.

boto3 is imported only when an `S3Store` is made, i.e. in the shipper's thread when `--lake-url` is
set: a collector without object storage never loads it. Credentials, region and endpoint come from the
standard variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` for S3-compatible stores, which are then addressed
path-style) or any other source boto3 knows (profiles, instance roles).

Every failure of the store (refused, timed out, 5xx, 403, no credentials) becomes one `StoreError`
naming the operation and the key: the shipper treats all of them alike (retry with backoff).
`delete_if_unchanged` sends `If-Match` with the ETag that was read, and `write_verified(expect=…)` sends
`If-Match` (or `If-None-Match: *` to create), so the check and the delete or write are one request
(S3 has honoured both on PutObject since 2024, If-Match on DeleteObject too; moto 5.2 does as well;
a 412 becomes `Changed`) (measured with the other clients in `python -m bench.store_clients`: boto3 is the only
one of boto3, obstore, s3fs and pyarrow.fs that can do it, and it stays the fastest or equal).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from l2_lake.logs import redact
from l2_lake.store.home import (
    ABSENT,
    READ_CHUNK,
    Changed,
    Entry,
    StoreError,
    VerifyFailed,
    sha256_file,
    valid_key,
    validate_key,
)

# bucket names as S3 allows them for new buckets (lower case, digits, dots, hyphens; 3–63 characters)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LakeUrl:
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_lake_url(url: str) -> LakeUrl:
    """`s3://bucket[/prefix]` → LakeUrl; ValueError saying what is wrong otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise ValueError(f"{url!r} is not an s3:// URL; use s3://bucket or s3://bucket/prefix")
    if parsed.query or parsed.fragment or parsed.params or "@" in parsed.netloc or ":" in parsed.netloc:
        raise ValueError(f"{url!r}: give only s3://bucket[/prefix] (no credentials, port, query or fragment; "
                         "the endpoint of an S3-compatible store goes in AWS_ENDPOINT_URL)")
    bucket = parsed.netloc
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{url!r}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, "
                         "dots or hyphens)")
    prefix = parsed.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"{url!r}: the prefix {prefix!r} has an empty, '.' or '..' segment")
    return LakeUrl(bucket, prefix)


class S3Store:
    """The lake's home in a bucket: `l2_lake.store.home.Home` over the objects under one `LakeUrl`, every
    failure a `StoreError`."""

    def __init__(self, url: LakeUrl, *, connect_timeout: float = CONNECT_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S, max_attempts: int = 3) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.skipped_keys = 0
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            # S3-compatible stores do not all take botocore's default CRC32 trailers; we send our own
            # sha256 (ChecksumSHA256) and verify every object by reading it back anyway
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        try:
            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)
        except Exception as exc:  # bad region or endpoint spelling: the same retry path as a store that is down
            raise StoreError(f"cannot make an S3 client for {url} ({type(exc).__name__}: {exc})") from exc

    def describe(self) -> str:
        return f"{self.url}" + (f" at {redact(self.endpoint)}" if self.endpoint else "")

    def url_of(self, key: str) -> str:
        return f"s3://{self.url.bucket}/{self.url.key(validate_key(key))}"

    def _key(self, relative: str) -> str:
        return self.url.key(validate_key(relative))

    def _fail(self, op: str, key: str, exc: Exception) -> StoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            detail = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile or role)"
        elif isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"HTTP {status} {err.get('Code', '')}: {err.get('Message', '')}".strip()
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return StoreError(f"{op} s3://{self.url.bucket}/{key} failed ({redact(detail)})")

    def stat(self, relative: str) -> Entry | None:
        """The object's size, Last-Modified, ETag and user metadata, or None if there is no such object."""
        from botocore.exceptions import ClientError

        key = self._key(relative)
        try:
            response = self._client.head_object(Bucket=self.url.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._fail("HEAD", key, exc) from exc
        except Exception as exc:
            raise self._fail("HEAD", key, exc) from exc
        return Entry(relative, int(response["ContentLength"]), _mtime_ns(response["LastModified"]),
                     response.get("ETag", ""), dict(response.get("Metadata") or {}))

    def _put(self, relative: str, body: bytes | Path, sha256_hex: str, metadata: dict[str, str],
             content_type: str, expect: str | None = None) -> None:
        """One PutObject of `body` (bytes, or a file streamed from disk) with its sha256 as
        `ChecksumSHA256` (the store checks it on receipt) and in the user metadata (`sha256`)."""
        key = self._key(relative)
        checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        meta = {**metadata, "sha256": sha256_hex}
        condition = {} if expect is None else {"IfNoneMatch": "*"} if expect == ABSENT else {"IfMatch": expect}
        if isinstance(body, Path):
            with open(body, "rb") as f:  # a missing local file is our error, not the store's
                self._put_object(key, f, checksum, meta, content_type, condition)
        else:
            self._put_object(key, body, checksum, meta, content_type, condition)

    def _put_object(self, key: str, body: Any, checksum: str, meta: dict[str, str], content_type: str,
                    condition: dict[str, str]) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.url.bucket, Key=key, Body=body, ChecksumSHA256=checksum,
                                    Metadata=meta, ContentType=content_type, **condition)
        except ClientError as exc:
            if condition and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                raise Changed(f"PUT s3://{self.url.bucket}/{key} not done: the object changed since it was "
                              "read (another writer); read again and merge") from exc
            raise self._fail("PUT", key, exc) from exc
        except Exception as exc:
            raise self._fail("PUT", key, exc) from exc

    def read_digest(self, relative: str) -> tuple[str, int, dict[str, str]]:
        """GET the whole object: (sha256 hex of its bytes, size, user metadata)."""
        key = self._key(relative)
        sha = hashlib.sha256()
        size = 0
        try:
            response = self._client.get_object(Bucket=self.url.bucket, Key=key)
            for chunk in response["Body"].iter_chunks(READ_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        except Exception as exc:
            raise self._fail("GET", key, exc) from exc
        return sha.hexdigest(), size, dict(response.get("Metadata") or {})

    def read(self, relative: str) -> bytes | None:
        """GET the whole object into memory; None if there is no such object (one request, no HEAD)."""
        from botocore.exceptions import ClientError

        key = self._key(relative)
        try:
            return self._client.get_object(Bucket=self.url.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("GET", key, exc) from exc
        except Exception as exc:
            raise self._fail("GET", key, exc) from exc

    def list_dirs(self, relative: str) -> list[str]:
        """Names of the "directories" (common prefixes) directly under `relative`, sorted: e.g. the
        instIds under `raw/okx/l2_perps`."""
        prefix = self.url.key(validate_key(relative.strip("/"))) + "/" if relative.strip("/") else self.url.key("")
        names: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.url.bucket, Prefix=prefix, Delimiter="/"):
                names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as exc:
            raise self._fail("LIST", prefix, exc) from exc
        valid = [name for name in names if valid_key(name)]
        self.skipped_keys += len(names) - len(valid)
        return sorted(valid)

    def list(self, relative_prefix: str, start_after: str | None = None) -> list[Entry]:
        """Every object whose key starts with `relative_prefix` (a key prefix, not only a "directory"),
        in key order; with `start_after`, only the keys after that relative key. A key that is not a
        lake key (`validate_key`) is skipped and counted in `skipped_keys`."""
        prefix = self.url.key(relative_prefix)
        strip = len(self.url.key(""))
        args: dict[str, Any] = {"Bucket": self.url.bucket, "Prefix": prefix}
        if start_after:
            args["StartAfter"] = self.url.key(start_after)
        found: list[Entry] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**args):
                found += [Entry(item["Key"][strip:], int(item["Size"]), _mtime_ns(item["LastModified"]),
                                item.get("ETag", "")) for item in page.get("Contents", [])]
        except Exception as exc:
            raise self._fail("LIST", prefix, exc) from exc
        valid = [entry for entry in found if valid_key(entry.key)]
        self.skipped_keys += len(found) - len(valid)
        return valid

    def download(self, relative: str, target: Path) -> None:
        """GET the object into the file `target` (created or replaced), streamed."""
        key = self._key(relative)
        try:
            response = self._client.get_object(Bucket=self.url.bucket, Key=key)
            with open(target, "wb") as f:
                for chunk in response["Body"].iter_chunks(READ_CHUNK):
                    f.write(chunk)
        except OSError:
            raise
        except Exception as exc:
            raise self._fail("GET", key, exc) from exc

    def write_verified(self, relative: str, body: bytes | Path, metadata: dict[str, str], content_type: str,
                       sha256_hex: str | None = None, expect: str | None = None) -> str:
        """PUT `body` (bytes, or a file streamed from disk) with its sha256, then read the object back and
        compare its bytes and its `sha256` metadata: the sha256, or VerifyFailed (a StoreError) if the
        store does not hold exactly those bytes."""
        if sha256_hex is None:
            sha256_hex = sha256_file(body) if isinstance(body, Path) else hashlib.sha256(body).hexdigest()
        self._put(relative, body, sha256_hex, metadata, content_type, expect)
        read_back, size, stored = self.read_digest(relative)
        if read_back != sha256_hex or stored.get("sha256") != sha256_hex:
            raise VerifyFailed(f"verification of {self.url_of(relative)} failed: it reads back as sha256 "
                               f"{read_back[:16]}… ({size} bytes), the bytes sent were {sha256_hex[:16]}…")
        return sha256_hex

    def delete_if_unchanged(self, relative: str, version: str) -> bool:
        """DELETE the object only if its ETag is still `version` (`If-Match`, one request: a write that lands
        in between is never deleted); False if it changed or is gone."""
        from botocore.exceptions import ClientError

        key = self._key(relative)
        try:
            self._client.delete_object(Bucket=self.url.bucket, Key=key, IfMatch=version)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 412):
                return False
            raise self._fail("DELETE", key, exc) from exc
        except Exception as exc:
            raise self._fail("DELETE", key, exc) from exc
        return True

    def raw_client(self) -> Any:
        """The boto3 client (benchmarks and tests)."""
        return self._client


def _mtime_ns(last_modified: datetime) -> int:
    return int(last_modified.timestamp() * 1_000_000) * 1000
