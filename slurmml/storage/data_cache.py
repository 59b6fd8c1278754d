"""Where jobs find dataset versions: a cache that holds each version once, as a folder named by its digest.

  <cache>/<name>/<digest hex>/           the version's files (read-only)
  <cache>/<name>/<digest hex>.complete   written last: the folder is whole
  <cache>/<name>/<digest hex>.lock       flock'd by the one process that builds it; the others wait, then reuse it
  <cache>/<name>/manifests/<version>.json the manifests read (versions never change): a job needs no S3 for them
  <cache>/<name>/pins.json               alias -> version as `stage` resolved them on the login node

A version is built in a temporary folder beside its place and renamed into it, so a reader never sees half of
one; 64 array tasks of one node asking for it at once download it once. Which cache (`cache_root`):
SLURMML_DATA_CACHE if set; else, when node-local is asked for (node_local=True, or SLURMML_DATA_NODE_LOCAL=1),
$SLURM_TMPDIR/slurmml-data (or /tmp/slurmml-data-$USER); else $SLURMML_HOME/data-cache, on the shared
filesystem, which is where `stage` puts versions from the login node. A node-local cache copies a version from
the shared cache when it is there, and downloads it otherwise.

Inside a job an alias resolves to the version staged for it (pins.json), so every task of a sweep reads the same
version even if `latest` moves while the sweep runs; a version the caches hold needs no S3 at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional

from slurmml.core import manifest as m
from slurmml.core.tables import size_text
from slurmml.errors import SlurmmlError

CACHE_ENV = "SLURMML_DATA_CACHE"
NODE_LOCAL_ENV = "SLURMML_DATA_NODE_LOCAL"
COMPLETE = ".complete"
LOCK = ".lock"


class Staged(NamedTuple):
    name: str
    version: int
    digest: str
    path: Path


@dataclass(frozen=True)
class Opened:
    """A version ready to read: `path` (its folder, or its file) and whether this process downloaded it."""

    name: str
    version: int
    digest: str
    path: Path
    fetched: bool
    bytes: int = 0


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def in_job(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("SLURM_JOB_ID") or environ.get("SLURMML_SPOOL"))


def shared_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The cache on the shared filesystem, where the login node stages versions."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    from slurmml.home import slurmml_home

    return slurmml_home() / "data-cache"


def cache_root(node_local: Optional[bool] = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The cache this process uses (see the module's doc for the order)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    if node_local is None:
        node_local = _truthy(environ.get(NODE_LOCAL_ENV))
    if node_local:
        if environ.get("SLURM_TMPDIR"):
            return Path(environ["SLURM_TMPDIR"]) / "slurmml-data"
        return Path("/tmp") / f"slurmml-data-{environ.get('USER') or os.getuid()}"
    return shared_root(environ)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(value, separators=(",", ":")))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_only(folder: Path) -> None:
    """Files of a cached version are read-only: a job writing into its input would change it for every later job."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _remove(path: Path) -> None:
    """Remove a folder even with read-only files in it (their folder stays writable)."""
    shutil.rmtree(path, ignore_errors=True)


class DataCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DataCache({str(self.root)!r})"

    def folder(self, name: str, digest: str) -> Path:
        return self.root / name / m.bare(digest)

    def _marker(self, name: str, digest: str) -> Path:
        return self.root / name / f"{m.bare(digest)}{COMPLETE}"

    def complete(self, name: str, digest: str) -> bool:
        return self._marker(name, digest).is_file() and self.folder(name, digest).is_dir()

    # ------------------------------------------------------------------ manifests and pins

    def manifest(self, name: str, version: int, store_url: Optional[str]) -> Optional[dict[str, Any]]:
        """The manifest of name@version read earlier from the store at `store_url`, or None."""
        saved = _read_json(self.root / name / "manifests" / f"{version}.json")
        if not isinstance(saved, dict) or (store_url and saved.get("store") != store_url):
            return None
        try:
            return m.check_manifest(saved.get("manifest"), f"cached manifest {name}@v{version}")
        except SlurmmlError:
            return None

    def save_manifest(self, document: Mapping[str, Any], store_url: str) -> None:
        path = self.root / document["name"] / "manifests" / f"{document['version']}.json"
        if not path.exists():
            _write_json(path, {"store": store_url, "manifest": dict(document)})

    def pins(self, name: str, store_url: Optional[str]) -> dict[str, int]:
        saved = _read_json(self.root / name / "pins.json")
        if not isinstance(saved, dict) or (store_url and saved.get("store") != store_url):
            return {}
        return {k: v for k, v in (saved.get("pins") or {}).items() if isinstance(v, int)}

    def pin(self, name: str, alias: str, version: int, store_url: str) -> None:
        pins = self.pins(name, store_url)
        pins[alias] = version
        _write_json(self.root / name / "pins.json", {"store": store_url, "pins": pins, "staged": time.time()})

    # ------------------------------------------------------------------ building a version

    @contextlib.contextmanager
    def _locked(self, name: str, digest: str) -> Iterator[None]:
        import fcntl

        path = self.root / name / f"{m.bare(digest)}{LOCK}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            yield

    def materialize(self, document: Mapping[str, Any], fill: Callable[[Path], Any]) -> tuple[Path, bool]:
        """The version's folder in this cache, built by `fill(empty folder)` if no one built it yet: (folder, True
        if this call built it). One line, and nothing left behind, when the disk fills up."""
        name, digest = document["name"], document["digest"]
        final = self.folder(name, digest)
        if self.complete(name, digest):
            return final, False
        label = f"{name}@v{document['version']}"
        from slurmml.storage.datasets import check_space, disk_error

        try:
            with self._locked(name, digest):
                if self.complete(name, digest):  # another process built it while this one waited
                    return final, False
                for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a process that died
                    _remove(stale)
                if final.exists():
                    _remove(final)
                check_space(final.parent, int(document.get("bytes") or 0),
                            f"{label} ({size_text(document.get('bytes'))})")
                temporary = final.parent / f".{final.name}.tmp-{os.getpid()}"
                try:
                    temporary.mkdir()
                    fill(temporary)
                    _read_only(temporary)
                    os.rename(temporary, final)
                    _write_json(self._marker(name, digest), {"name": name, "version": document["version"],
                                                             "digest": digest, "bytes": document.get("bytes"),
                                                             "time": time.time()})
                except BaseException:
                    _remove(temporary)
                    _remove(final)
                    with contextlib.suppress(OSError):
                        self._marker(name, digest).unlink()
                    raise
        except OSError as error:
            raise disk_error(error, self.root, f"materializing {label}") from None
        except SlurmmlError as error:
            if "no space left" in str(error):  # said by the blob store for a big file: the same one line
                raise SlurmmlError(f"no space left in {self.root} while materializing {label}: nothing was kept "
                                   f"(free space there, or set {CACHE_ENV} to a bigger disk)") from None
            raise
        return final, True


# ---------------------------------------------------------------- resolving without the store when possible


def _store_url(environ: Mapping[str, str]) -> Optional[str]:
    from slurmml.storage.config import load_storage

    config = load_storage(environ, required=False)
    return config.url if config else None


def _caches(node_local: Optional[bool], environ: Mapping[str, str]) -> list[DataCache]:
    primary = DataCache(cache_root(node_local, environ))
    shared = DataCache(shared_root(environ))
    return [primary] if shared.root == primary.root else [primary, shared]


def _cached_manifest(caches: Iterable[DataCache], name: str, version: int,
                     url: Optional[str]) -> Optional[dict[str, Any]]:
    return next((doc for cache in caches for doc in [cache.manifest(name, version, url)] if doc), None)


def _pinned(caches: Iterable[DataCache], spec: m.Spec, url: Optional[str]) -> Optional[int]:
    return next((pins[spec.alias] for cache in caches for pins in [cache.pins(spec.name, url)]
                 if spec.alias in pins), None)


def _resolve(spec: m.Spec, caches: list[DataCache], url: Optional[str], store_factory: Callable[[], Any],
             environ: Mapping[str, str]) -> dict[str, Any]:
    from slurmml.storage.datasets import resolve
    from slurmml.storage.s3 import Unreachable

    version = spec.version
    if version is None and in_job(environ):
        version = _pinned(caches, spec, url)
    if version is not None:
        cached = _cached_manifest(caches, spec.name, version, url)
        if cached:
            return cached
    try:
        return resolve(store_factory(), m.Spec(spec.name, version=version) if version else spec)
    except Unreachable as error:
        pinned = _pinned(caches, spec, url) if spec.version is None else None
        cached = _cached_manifest(caches, spec.name, pinned, url) if pinned else None
        if cached:
            return cached
        raise SlurmmlError(f"{error}; and no cache here holds {spec} (stage it from the login node: "
                           f"`slurmml dataset stage {spec}`)") from None


def open_version(spec: str, node_local: Optional[bool] = None, store: Any = None, progress: Any = False,
                 environ: Mapping[str, str] = os.environ) -> Opened:
    """The version `spec` names, materialized in this process's cache (downloaded only if no cache holds it)."""
    parsed = m.parse_spec(spec)
    caches = _caches(node_local, environ)
    url = store.config.url if store is not None else _store_url(environ)
    opened: dict[str, Any] = {}

    def the_store() -> Any:
        if "store" not in opened:
            from slurmml.storage.s3 import open_store

            opened["store"] = store or open_store()
        return opened["store"]

    document = _resolve(parsed, caches, url, the_store, environ)
    name, digest = document["name"], document["digest"]
    primary = caches[0]
    fetched = {"from_store": False}

    def fill(folder: Path) -> None:
        source = next((c for c in caches[1:] if c.complete(name, digest)), None)
        if source is not None:  # a node-local cache copies what the shared cache already holds
            shutil.copytree(source.folder(name, digest), folder, dirs_exist_ok=True)
            return
        from slurmml.storage.datasets import download

        fetched["from_store"] = True
        download(the_store(), document, folder, progress)

    folder, _ = primary.materialize(document, fill)
    if url:  # the next process here needs no S3 for this version
        with contextlib.suppress(OSError):
            primary.save_manifest(document, url)
    from slurmml.storage.datasets import entry_path

    return Opened(name, document["version"], digest, entry_path(document, folder), fetched["from_store"],
                  int(document.get("bytes") or 0))


def stage(specs: Iterable[str], store: Any = None, progress: Any = True,
          root: Optional[Path] = None) -> list[Staged]:
    """On the login node, before jobs start: resolve each spec now (aliases pinned to what they name now), keep
    the manifests and materialize each version in the shared cache, so jobs need neither S3 nor a download.
    [(name, version, digest, path)], in the order given."""
    from slurmml.storage.datasets import download, entry_path, resolve
    from slurmml.storage.s3 import open_store

    store = store or open_store()
    cache = DataCache(root or shared_root())
    url = store.config.url
    staged = []
    for text in specs:
        spec = m.parse_spec(text)
        document = resolve(store, spec)
        try:
            cache.save_manifest(document, url)
            if spec.alias:
                cache.pin(spec.name, spec.alias, document["version"], url)
        except OSError as error:
            from slurmml.storage.datasets import disk_error

            raise disk_error(error, cache.root, f"staging {spec}") from None
        folder, _ = cache.materialize(document, lambda path, d=document: download(store, d, path, progress))
        staged.append(Staged(document["name"], document["version"], document["digest"], entry_path(document, folder)))
    return staged


def note(opened: Opened, seconds: float) -> str:
    """The line a job prints when it downloaded a version."""
    return (f"slurmml: dataset {opened.name}@v{opened.version}: downloaded {size_text(opened.bytes)} to "
            f"{opened.path} in {seconds:.1f} s")

