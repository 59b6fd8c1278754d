"""Which object store slurmml uses: a URL (`s3://bucket/prefix`) and how to reach it, never the credentials.

Credentials come only from boto3's own chain (environment, `~/.aws/credentials`, `~/.aws/config`, profiles,
instance roles), so nothing secret is written by slurmml. The settings are read, first match wins, from:
  SLURMML_STORAGE (s3://bucket/prefix), SLURMML_S3_ENDPOINT, SLURMML_S3_PROFILE, SLURMML_S3_REGION,
  SLURMML_S3_CHECKSUM (when_required | when_supported)
  $SLURMML_HOME/storage.json, written by `slurmml storage set`
An endpoint may also come from boto3's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL or a profile's endpoint_url.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional

from slurmml.errors import SlurmmlError

CHECKSUM_CHOICES = ("when_required", "when_supported")
STORAGE_FILE = "storage.json"
_ENV = {"url": "SLURMML_STORAGE", "endpoint_url": "SLURMML_S3_ENDPOINT", "profile": "SLURMML_S3_PROFILE",
        "region": "SLURMML_S3_REGION", "checksum": "SLURMML_S3_CHECKSUM"}


@dataclass(frozen=True)
class StorageConfig:
    bucket: str
    prefix: str = ""  # without leading or trailing slashes
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    region: Optional[str] = None
    # boto3 >= 1.36 sends CRC32 checksums on every upload, which some MinIO and Ceph versions reject
    checksum: Optional[str] = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        """The object key of `parts` under this store's prefix."""
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part)

    def where(self) -> str:
        """The store, as a message names it: its URL and endpoint (never a credential)."""
        return f"{self.url} at {self.endpoint_url}" if self.endpoint_url else self.url

    def to_environment(self) -> dict[str, str]:
        """The variables that make a job (or a child process) use this same store."""
        values = {"url": self.url, **{k: v for k, v in asdict(self).items() if k not in ("bucket", "prefix")}}
        return {_ENV[name]: value for name, value in values.items() if value}


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ('bucket', 'some/prefix'); SlurmmlError for anything else."""
    text = (url or "").strip()
    if not text.startswith("s3://") or not text[5:].split("/", 1)[0]:
        raise SlurmmlError(f"not an S3 URL: {url!r} (expected s3://BUCKET or s3://BUCKET/PREFIX)")
    bucket, _, prefix = text[5:].partition("/")
    return bucket, prefix.strip("/")


def from_settings(settings: Mapping[str, Optional[str]]) -> StorageConfig:
    """A config from `url` and the optional `endpoint_url`, `profile`, `region` and `checksum` settings."""
    bucket, prefix = parse_url(settings.get("url") or "")
    checksum = settings.get("checksum") or None
    if checksum is not None and checksum not in CHECKSUM_CHOICES:
        raise SlurmmlError(f"checksum {checksum!r}: expected one of {', '.join(CHECKSUM_CHOICES)}")
    return StorageConfig(bucket, prefix, settings.get("endpoint_url") or None, settings.get("profile") or None,
                         settings.get("region") or None, checksum)


def storage_file(home: Optional[Path] = None) -> Path:
    from slurmml.home import slurmml_home

    return (home or slurmml_home()) / STORAGE_FILE


def load_storage(environ: Mapping[str, str] = os.environ, required: bool = True) -> Optional[StorageConfig]:
    """The configured store: the environment's settings if it names a URL, else storage.json, else None (or
    SlurmmlError, one line saying how to configure one, when `required`)."""
    if environ.get(_ENV["url"]):
        return from_settings({name: environ.get(variable) for name, variable in _ENV.items()})
    path = storage_file()
    if path.is_file():
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SlurmmlError(f"cannot read {path}: {error}") from None
        if not isinstance(settings, dict):
            raise SlurmmlError(f"{path}: expected a JSON object")
        return from_settings(settings)
    if required:
        raise SlurmmlError("no object store is configured: run `slurmml storage set s3://BUCKET/PREFIX` "
                           "(or set SLURMML_STORAGE)")
    return None


def save_storage(config: StorageConfig) -> Path:
    """Write storage.json (user-only permissions) so later commands and jobs use this store."""
    path = storage_file()
    settings = {"url": config.url, **{k: v for k, v in asdict(config).items() if k not in ("bucket", "prefix") and v}}
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(settings, handle, indent=2)
    os.replace(temporary, path)
    return path
