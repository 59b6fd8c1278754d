"""`slurmml artifacts RUN` (what a run logged with slurmml.log_artifact) and `slurmml artifacts get RUN NAME [DEST]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from slurmml.core.tables import Column, size_text
from slurmml.errors import SlurmmlError

_COLUMNS = ["name", Column("size_text", "size"), Column("digest_short", "sha256", priority=2), "upload",
            Column("uri", priority=3, wrap=True), Column("path", priority=4, wrap=True)]
_CSV_COLUMNS = ["name", "size", "digest", "upload", "uri", "path", "time"]


class _ArtifactsGroup(click.Group):
    """`slurmml artifacts RUN` is `slurmml artifacts list RUN`: a first word that is no command is a run id."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ArtifactsGroup, subcommand_metavar="RUN | get RUN NAME [DEST]")
def artifacts() -> None:
    """A run's artifacts: `slurmml artifacts RUN` lists them, `slurmml artifacts get RUN NAME [DEST]` fetches one."""


def _artifacts_of(run_id: str) -> list[dict[str, Any]]:
    from slurmml.cli.output import open_registry

    return open_registry(run_ids=[run_id]).run(run_id)["artifacts"]


def _row(artifact: dict[str, Any]) -> dict[str, Any]:
    digest = artifact.get("digest")
    size = artifact.get("size")
    return {**artifact, "upload": artifact.get("upload") or "-", "size_text": size_text(size),
            "digest_short": digest[:12] if digest else ""}


@artifacts.command("list")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def list_artifacts(run_id: str, as_json: bool, as_csv: bool) -> None:
    """The artifacts RUN logged: name, size, sha256, upload state and where the bytes are."""
    from slurmml.cli.output import emit

    rows = _artifacts_of(run_id)
    if as_json or as_csv:
        emit(rows, as_json, as_csv, _CSV_COLUMNS)
    elif not rows:
        click.echo(f"run {run_id} logged no artifacts")
    else:
        emit([_row(row) for row in rows], False, False, _COLUMNS)


@artifacts.command("get")
@click.argument("run_id")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
def get(run_id: str, name: str, dest: Optional[Path], force: bool) -> None:
    """Fetch artifact NAME of RUN into DEST (default ./NAME): from the object store, its sha256 checked (a folder
    is unpacked), or copied from its path when it was never uploaded and this machine has it."""
    found = [row for row in _artifacts_of(run_id) if row["name"] == name]
    if not found:
        names = sorted({row["name"] for row in _artifacts_of(run_id)})
        raise SlurmmlError(f"run {run_id} has no artifact {name!r}"
                           + (f" (it has: {', '.join(names)})" if names else " (it logged none)"))
    artifact = max(found, key=lambda row: row.get("time") or 0)  # the last one logged under that name
    target = Path(dest) if dest is not None else Path.cwd() / name
    if target.is_dir() and dest is not None and not force:
        target = target / name
    if target.exists() and not force:
        raise SlurmmlError(f"{target} exists (pass --force to replace it)")
    if artifact.get("upload") == "uploaded" and artifact.get("uri") and artifact.get("digest"):
        _download(artifact, target)
        click.echo(f"{name}: {artifact['uri']} -> {target}")
        return
    source = Path(artifact.get("path") or "")
    if artifact.get("path") and source.exists():
        _copy(source, target)
        click.echo(f"{name}: not uploaded ({artifact.get('upload') or 'not asked'}); copied {source} -> {target}")
        return
    raise SlurmmlError(f"artifact {name!r} of run {run_id} is not in the object store "
                       f"({artifact.get('upload') or 'upload not asked'}) and {source} is not on this machine")


def store_of(uri: str) -> Any:
    """The ObjectStore holding the blob at `uri` (s3://bucket/prefix/blobs/...): the configured store's endpoint and
    profile, with the bucket and prefix the URI names."""
    import dataclasses

    from slurmml.storage.config import StorageConfig, load_storage, parse_url
    from slurmml.storage.s3 import ObjectStore

    bucket, key = parse_url(uri)
    prefix = key.rsplit("blobs/sha256/", 1)[0].strip("/")
    configured = load_storage(required=False)
    config = dataclasses.replace(configured, bucket=bucket, prefix=prefix) if configured else StorageConfig(bucket, prefix)
    return ObjectStore(config)


def _download(artifact: dict[str, Any], target: Path) -> None:
    from slurmml.storage.artifact_uploads import is_packed_folder, unpack_folder
    from slurmml.storage.blobs import BlobStore

    blobs = BlobStore(store_of(artifact["uri"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".{target.name}.slurmml-get"
    try:
        with _progress(artifact["name"], artifact.get("size")) as advance:
            blobs.get_file(artifact["digest"], staged, progress=advance)
        if is_packed_folder(staged):
            unpacked = target.parent / f".{target.name}.slurmml-unpacked"
            _remove(unpacked)
            unpack_folder(staged, unpacked)
            _remove(target)
            unpacked.rename(target)
        else:
            _remove(target)
            staged.replace(target)
    finally:
        _remove(staged)


def _copy(source: Path, target: Path) -> None:
    import shutil

    _remove(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
    except OSError as error:
        raise SlurmmlError(f"cannot copy {source} to {target}: {error.strerror or error}") from None


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class _progress:
    """A Rich progress bar of the bytes downloaded, on a terminal's stderr only (a no-op callback elsewhere)."""

    def __init__(self, name: str, size: Optional[int]) -> None:
        self.name, self.size = name, size
        self._bar: Any = None

    def __enter__(self) -> Any:
        import sys

        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        from slurmml.cli.terminal import console

        self._bar = Progress(TextColumn("{task.fields[label]}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             console=console(stderr=True), transient=True)
        self._bar.__enter__()
        task = self._bar.add_task("get", total=self.size, label=self.name)  # markup=False: a name is text
        return lambda nbytes: self._bar.advance(task, nbytes)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
