"""The one adapter to S3: a boto3 client made from a StorageConfig, and its errors turned into one line.

boto3 is imported here only, on first use (the in-job client and `slurmml --help` stay fast). Every call names
what it was doing, so "Access Denied" becomes "cannot list datasets in s3://b/p: access denied (...)".
moto and some S3-compatible servers accept corrupt bodies: callers check content hashes themselves.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from slurmml.errors import SlurmmlError
from slurmml.storage.config import StorageConfig

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 3  # boto3's "standard" retries: a blip is retried, a server that is down fails in seconds
POOL_SIZE = 32  # parallel part uploads and pack downloads share one client


class StorageError(SlurmmlError):
    """The store refused or failed a request (one line, with the store and what was being done)."""


class NotFound(StorageError):
    """No object under that key (or no such bucket)."""


class Unreachable(StorageError):
    """The endpoint did not answer: callers that can wait (artifact uploads) fall back instead of failing."""


class Refused(StorageError):
    """The store said no to these credentials or this request."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    version_id: Optional[str] = None
    metadata: Optional[Mapping[str, str]] = None


_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken",
                     "InvalidToken", "AuthorizationHeaderMalformed"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def describe(error: BaseException, config: StorageConfig, doing: str) -> StorageError:
    """The one-line error for `error` (raised by boto3) while `doing` something with the store in `config`."""
    import botocore.exceptions as bce

    where = config.where()
    if isinstance(error, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return Refused(f"cannot {doing}: no S3 credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                       f"AWS_SECRET_ACCESS_KEY, or write ~/.aws/credentials)")
    if isinstance(error, bce.ProfileNotFound):
        return Refused(f"cannot {doing}: {error}")
    if isinstance(error, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
                          bce.ConnectionClosedError)) or isinstance(error, bce.HTTPClientError):
        return Unreachable(f"cannot {doing}: the S3 endpoint {config.endpoint_url or '(default)'} does not answer "
                           f"({type(error).__name__})")
    if isinstance(error, bce.ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code") or "")
        message = str(info.get("Message") or code)
        if code in _CREDENTIAL_CODES:
            return Refused(f"cannot {doing}: {where} refused the credentials ({code}: {message})")
        if code == "NoSuchBucket":
            return NotFound(f"cannot {doing}: bucket {config.bucket!r} does not exist at "
                            f"{config.endpoint_url or 'the default endpoint'}")
        if code in _MISSING_CODES:
            return NotFound(f"cannot {doing}: not found in {where}")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return Refused(f"cannot {doing}: {where} denied access ({message})")
        return StorageError(f"cannot {doing}: {where} answered {code}: {message}")
    if isinstance(error, bce.BotoCoreError):
        return StorageError(f"cannot {doing}: {error}")
    raise error


def error_code(error: BaseException) -> str:
    """The S3 error code of a ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    return str((response or {}).get("Error", {}).get("Code") or "") if isinstance(response, dict) else ""


class ObjectStore:
    """Objects under one StorageConfig's bucket and prefix: keys given to its methods are relative to the prefix."""

    def __init__(self, config: StorageConfig, client: Any = None) -> None:
        self.config = config
        self._client = client
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the client

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock, self.errors("connect to the object store"):
                if self._client is None:
                    self._client = make_client(self.config)
        return self._client

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn what boto3 raises inside into the one-line StorageError for `doing`."""
        import botocore.exceptions as bce

        try:
            yield
        except (bce.BotoCoreError, bce.ClientError) as error:
            raise describe(error, self.config, doing) from None

    def key(self, relative: str) -> str:
        return self.config.key(relative)

    # ------------------------------------------------------------------ requests

    def check(self) -> None:
        """One cheap request that proves the endpoint, the credentials and the bucket (one line if not)."""
        with self.errors("list the object store"):
            self.client.list_objects_v2(Bucket=self.config.bucket, Prefix=self.key(""), MaxKeys=1)

    def put_bytes(self, relative: str, data: bytes, if_absent: bool = False,
                  metadata: Optional[Mapping[str, str]] = None) -> bool:
        """Store `data`; with `if_absent`, only if no object has that key (a conditional put, If-None-Match: *).
        True if written, False if the object was already there (with if_absent)."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        if metadata:
            extra["Metadata"] = dict(metadata)
        import botocore.exceptions as bce

        try:
            self.client.put_object(Bucket=self.config.bucket, Key=self.key(relative), Body=data, **extra)
        except bce.ClientError as error:
            if if_absent and error_code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise describe(error, self.config, f"write {relative}") from None
        except bce.BotoCoreError as error:
            raise describe(error, self.config, f"write {relative}") from None
        return True

    def get_bytes(self, relative: str, byte_range: Optional[tuple[int, int]] = None) -> bytes:
        """The object's bytes (or bytes [start, end) of it). NotFound if there is none."""
        return self.get_with_metadata(relative, byte_range)[0]

    def get_with_metadata(self, relative: str,
                          byte_range: Optional[tuple[int, int]] = None) -> tuple[bytes, dict[str, str]]:
        """The object's bytes (or bytes [start, end) of them) and its user metadata, from one GET (a HEAD then a
        GET could see two versions). NotFound if there is none."""
        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        with self.errors(f"read {relative}"):
            answer = self.client.get_object(Bucket=self.config.bucket, Key=self.key(relative), **extra)
            return answer["Body"].read(), dict(answer.get("Metadata") or {})

    def head(self, relative: str) -> Optional[ObjectInfo]:
        """The object's size, ETag and metadata, or None if there is no such object."""
        import botocore.exceptions as bce

        try:
            answer = self.client.head_object(Bucket=self.config.bucket, Key=self.key(relative))
        except bce.ClientError as error:
            if error_code(error) in _MISSING_CODES:
                return None
            raise describe(error, self.config, f"look up {relative}") from None
        except bce.BotoCoreError as error:
            raise describe(error, self.config, f"look up {relative}") from None
        return ObjectInfo(relative, int(answer.get("ContentLength") or 0), str(answer.get("ETag") or "").strip('"'),
                          answer.get("VersionId"), answer.get("Metadata") or {})

    def exists(self, relative: str) -> bool:
        return self.head(relative) is not None

    def list(self, relative_prefix: str, start_after: Optional[str] = None) -> Iterator[ObjectInfo]:
        """Every object under the prefix, in key order (keys relative to the store's prefix), page by page."""
        base = self.key("")
        cut = len(base) + 1 if base else 0
        arguments: dict[str, Any] = {"Bucket": self.config.bucket, "Prefix": self.key(relative_prefix)}
        if start_after:
            arguments["StartAfter"] = self.key(start_after)
        with self.errors(f"list {relative_prefix or self.config.url}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                for item in page.get("Contents") or ():
                    yield ObjectInfo(item["Key"][cut:], int(item["Size"]), str(item.get("ETag") or "").strip('"'))

    def folders(self, relative_prefix: str, doing: str) -> list[str]:
        """The names of the "folders" right under a prefix (S3's common prefixes, one listing by delimiter)."""
        base = self.key(relative_prefix.rstrip("/")) + "/"
        names = []
        with self.errors(doing):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=base, Delimiter="/"):
                names.extend(entry["Prefix"][len(base):].rstrip("/") for entry in page.get("CommonPrefixes") or ())
        return names

    def delete(self, relative: str) -> None:
        with self.errors(f"delete {relative}"):
            self.client.delete_object(Bucket=self.config.bucket, Key=self.key(relative))


def make_client(config: StorageConfig) -> Any:
    """A boto3 S3 client for `config`: credentials from boto3's chain, bounded timeouts and retries."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise SlurmmlError("S3 support needs boto3: pip install 'slurmml[s3]'") from None

    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                               "retries": {"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                               "max_pool_connections": POOL_SIZE}
    if config.checksum:
        options["request_checksum_calculation"] = config.checksum
        options["response_checksum_validation"] = config.checksum
    session = boto3.session.Session(profile_name=config.profile) if config.profile else boto3.session.Session()
    return session.client("s3", endpoint_url=config.endpoint_url, region_name=config.region or session.region_name
                          or "us-east-1", config=Config(**options))


def open_store(config: Optional[StorageConfig] = None) -> ObjectStore:
    """The configured store (SlurmmlError, in one line, if none is configured)."""
    from slurmml.storage.config import load_storage

    return ObjectStore(config or load_storage())  # type: ignore[arg-type]
