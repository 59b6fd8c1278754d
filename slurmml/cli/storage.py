"""`slurmml storage set|show`: which object store datasets, artifacts and shipped runs go to (never credentials)."""

from __future__ import annotations

from typing import Optional

import click

from slurmml.storage.config import CHECKSUM_CHOICES


@click.group()
def storage() -> None:
    """The object store (S3 or S3-compatible) slurmml uses; credentials come from boto3's chain (AWS_PROFILE,
    AWS_ACCESS_KEY_ID, ~/.aws), never from slurmml."""


@storage.command(name="set")
@click.argument("url")
@click.option("--endpoint", help="The S3 endpoint URL, for MinIO, Ceph and other S3-compatible stores.")
@click.option("--profile", help="The profile of ~/.aws to take credentials (and an endpoint_url) from.")
@click.option("--region", help="The region (default: the profile's, else us-east-1).")
@click.option("--checksum", type=click.Choice(CHECKSUM_CHOICES),
              help="when_required: send no CRC32 checksums (some MinIO and Ceph versions refuse boto3 1.36+'s).")
@click.option("--check/--no-check", default=True, show_default=True, help="Make one request to prove it works.")
def set_storage(url: str, endpoint: Optional[str], profile: Optional[str], region: Optional[str],
                checksum: Optional[str], check: bool) -> None:
    """Use URL (s3://BUCKET or s3://BUCKET/PREFIX) from now on: written to $SLURMML_HOME/storage.json, which jobs
    read too. SLURMML_STORAGE and SLURMML_S3_* in the environment win over it."""
    from slurmml.storage.config import from_settings, save_storage
    from slurmml.storage.s3 import ObjectStore

    config = from_settings({"url": url, "endpoint_url": endpoint, "profile": profile, "region": region,
                            "checksum": checksum})
    if check:
        ObjectStore(config).check()  # one line if the endpoint, the credentials or the bucket are wrong
    path = save_storage(config)
    click.echo(f"slurmml: using {config.where()} (saved in {path})")


@storage.command(name="show")
def show_storage() -> None:
    """Which store is configured, and from where."""
    from slurmml.cli.terminal import print_fields
    from slurmml.storage.config import load_storage

    config = load_storage(required=False)
    if config is None:
        click.echo("no object store is configured (slurmml storage set s3://BUCKET/PREFIX)")
        return
    print_fields([("url", config.url), ("endpoint", config.endpoint_url or "(boto3's default)"),
                  ("profile", config.profile or "(boto3's default chain)"), ("region", config.region or ""),
                  ("checksum", config.checksum or "(boto3's default)")])
