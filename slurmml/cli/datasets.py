"""`slurmml dataset ...`: versioned datasets in the object store (slurmml.storage.datasets does the work).

Every command says which store it worked in: on stdout before a table, on stderr with --json or --csv so those
stay machine-readable.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import click

from slurmml.cli.output import emit
from slurmml.core.tables import Column, size_text

_PROGRESS = click.option("--progress/--no-progress", default=None,
                         help="Show transfer bars even when not on a terminal (or never). Default: on a terminal.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_CSV = click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")


def _store() -> Any:
    from slurmml.storage.s3 import open_store

    return open_store()


def _progress(flag: Optional[bool]) -> Any:
    return True if flag is None else ("always" if flag else False)


def _where(store: Any, quiet_stdout: bool = False, what: str = "store") -> None:
    click.echo(f"{what}: {store.config.where()}", err=quiet_stdout)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


@click.group("dataset")
def dataset() -> None:
    """Versioned datasets in the object store: add, ls, show, diff, get, alias, verify, stage.

    A version is named NAME (the latest), NAME@v3 (or NAME@3), NAME@latest or NAME@ALIAS. In a job,
    `slurmml.dataset("NAME@v3")` returns the version's local folder and records it as the run's input.
    """


@dataset.command("add")
@click.argument("name")
@click.argument("path")
@click.option("-m", "--message", help="What this version is (kept in its manifest).")
@_JSON
@_PROGRESS
def add(name: str, path: str, message: Optional[str], as_json: bool, progress: Optional[bool]) -> None:
    """Add the folder or file PATH (or the objects under an s3:// URL, referenced where they are) as the next
    version of dataset NAME. Only files the previous version does not hold are uploaded."""
    from slurmml.storage import datasets

    store = _store()
    _where(store, as_json)
    document = datasets.add(store, name, path, message, progress=_progress(progress))
    label = f"{document['name']}@v{document['version']}"
    if as_json:
        click.echo(json.dumps({key: value for key, value in document.items() if key != "files"}, indent=2))
    elif document.get("unchanged"):
        click.echo(f"{label} already holds exactly these files: nothing added")
    elif document["kind"] == "reference":
        click.echo(f"added {label}: {_count(document['file_count'], 'object')}, {size_text(document['bytes'])}, "
                   f"referenced in place (nothing copied)")
    else:
        stats = document["stats"]
        reused = document["file_count"] - stats["new_files"]
        parent = f", {reused} reused from v{document['parent']}" if document["parent"] and reused else ""
        click.echo(f"added {label}: {_count(document['file_count'], 'file')}, {size_text(document['bytes'])}; "
                   f"{stats['new_files']} new{parent}; uploaded {size_text(stats['uploaded_bytes'])} in "
                   f"{_count(stats['uploaded_objects'], 'object')} ({document['digest'][:19]})")


@dataset.command("ls")
@_JSON
@_CSV
def ls(as_json: bool, as_csv: bool) -> None:
    """Every dataset: its latest version, how many versions, files, size and aliases."""
    from slurmml.storage import datasets

    store = _store()
    _where(store, as_json or as_csv, "datasets in")
    rows = datasets.list_datasets(store)
    if not rows and not (as_json or as_csv):
        click.echo("no datasets yet: add one with `slurmml dataset add NAME PATH`")
        return
    emit(rows, as_json, as_csv, ["name", "latest", Column("versions", "vers", priority=2), "files", "size",
                                 Column("aliases", priority=1, wrap=True), Column("created", priority=3),
                                 Column("user", priority=4), Column("kind", priority=5)])


@dataset.command("show")
@click.argument("spec")
@click.option("--files", "with_files", is_flag=True, help="List the files too.")
@_JSON
@click.option("--csv", "as_csv", is_flag=True, help="Print the files as CSV.")
def show(spec: str, with_files: bool, as_json: bool, as_csv: bool) -> None:
    """One version (SPEC: NAME, NAME@v3, NAME@ALIAS): where it came from, its digest, size and aliases."""
    from slurmml.storage import datasets

    store = _store()
    _where(store, as_json or as_csv)
    document = datasets.show(store, spec)
    file_columns = [Column("path", wrap=True), "size",
                    Column("etag", priority=2) if document["kind"] == "reference" else Column("sha256", priority=2)]
    if as_json:
        click.echo(json.dumps(document if with_files else {k: v for k, v in document.items() if k != "files"},
                              indent=2))
        return
    if as_csv:
        emit(document["files"], False, True, ["path", "size", "sha256", "blob", "offset", "length", "etag",
                                              "version_id", "bucket", "key"])
        return
    from slurmml.cli.terminal import print_fields

    stats = document.get("stats") or {}
    fields = [("dataset", f"{document['name']}@v{document['version']}"), ("digest", document["digest"]),
              ("aliases", " ".join(document["aliases"])), ("parent", f"v{document['parent']}" if document["parent"]
                                                          else None),
              ("files", document["file_count"]), ("size", size_text(document["bytes"])), ("kind", document["kind"]),
              ("source", document["source"]), ("message", document.get("message")),
              ("created", f"{document['created']} by {document['user']} on {document['host']}")]
    if document["kind"] == "stored" and stats:
        fields.append(("upload", f"{size_text(stats.get('uploaded_bytes'))} in "
                                 f"{_count(stats.get('uploaded_objects') or 0, 'object')} "
                                 f"({_count(stats.get('new_files') or 0, 'new file')})"))
    print_fields([(k, v) for k, v in fields if v not in (None, "")])
    if with_files:
        emit([dict(f, size=size_text(f["size"]), sha256=(f.get("sha256") or "")[:12]) for f in document["files"]],
             False, False, file_columns, "files")


@dataset.command("diff")
@click.argument("a")
@click.argument("b")
@_JSON
def diff(a: str, b: str, as_json: bool) -> None:
    """What changed from version A to version B (B may be just `@v2`: A's dataset)."""
    from slurmml.storage import datasets

    store = _store()
    _where(store, as_json)
    result = datasets.diff(store, a, b)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    rows = [{"change": "+", "path": f["path"], "size": size_text(f["size"])} for f in result["added"]]
    rows += [{"change": "-", "path": f["path"], "size": size_text(f["size"])} for f in result["removed"]]
    rows += [{"change": "~", "path": f["path"], "size": f"{size_text(f['size_a'])} -> {size_text(f['size_b'])}"}
             for f in result["changed"]]
    if rows:
        emit(sorted(rows, key=lambda r: r["path"]), False, False,
             [Column("change", " "), Column("path", wrap=True), "size"], f"{result['a']} -> {result['b']}")
    click.echo(f"{result['a']} -> {result['b']}: {len(result['added'])} added ({size_text(result['bytes_added'])}), "
               f"{len(result['removed'])} removed ({size_text(result['bytes_removed'])}), {len(result['changed'])} "
               f"changed ({size_text(result['bytes_changed'])}), {result['unchanged']} unchanged")


@dataset.command("get")
@click.argument("spec")
@click.argument("dest", required=False)
@_PROGRESS
def get(spec: str, dest: Optional[str], progress: Optional[bool]) -> None:
    """Download version SPEC into the new or empty folder DEST (default ./NAME), every file checked."""
    from slurmml.storage import datasets

    store = _store()
    _where(store)
    document, path = datasets.get(store, spec, dest, progress=_progress(progress))
    click.echo(f"got {document['name']}@v{document['version']} ({_count(document['file_count'], 'file')}, "
               f"{size_text(document['bytes'])}) into {path}")


@dataset.command("alias")
@click.argument("spec")
@click.argument("alias_name", metavar="ALIAS")
def alias(spec: str, alias_name: str) -> None:
    """Point ALIAS at version SPEC (moving it if it pointed elsewhere): NAME@ALIAS then names that version."""
    from slurmml.storage import datasets

    store = _store()
    _where(store)
    record = datasets.alias(store, spec, alias_name)
    click.echo(f"{record['name']}@{record['alias']} -> v{record['version']}")


@dataset.command("verify")
@click.argument("spec")
@_JSON
@_PROGRESS
def verify(spec: str, as_json: bool, progress: Optional[bool]) -> None:
    """Read back every file of version SPEC and check its sha256 (for a referenced dataset: each object's size and
    ETag). Exits 1 if anything is damaged or gone."""
    from slurmml.errors import SlurmmlError
    from slurmml.storage import datasets

    store = _store()
    _where(store, as_json)
    result = datasets.verify(store, spec, progress=_progress(progress))
    label = f"{result['name']}@v{result['version']}"
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for problem in result["problems"]:
            click.echo(f"  {problem}")
    if not result["ok"]:
        raise SlurmmlError(f"{label} failed verification: {len(result['problems'])} problem(s)")
    if not as_json:
        click.echo(f"{label}: {_count(result['files'], 'file')}, {size_text(result['bytes'])} intact")


@dataset.command("stage")
@click.argument("specs", nargs=-1, required=True)
@_PROGRESS
def stage(specs: tuple[str, ...], progress: Optional[bool]) -> None:
    """Materialize versions in the shared data cache now, and pin the aliases named to what they name now, so
    jobs use them without a download (or without S3 at all)."""
    from slurmml.storage.data_cache import stage as stage_versions
    from slurmml.storage.data_cache import shared_root

    store = _store()
    _where(store)
    for staged in stage_versions(specs, store, progress=_progress(progress)):
        click.echo(f"staged {staged.name}@v{staged.version} ({staged.digest[:19]}) at {staged.path}")
    click.echo(f"cache: {shared_root()}")
