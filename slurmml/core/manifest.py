"""Dataset versions as data: the manifest of a version, where each file's bytes live, and how versions compare.

A version manifest (one JSON object, written once at datasets/<name>/versions/<000001>.json) lists every file of
the version, sorted by path:
  stored files:     {"path", "size", "sha256", "blob", "offset", "length"}   bytes [offset, offset+length) of a blob
  reference files:  {"path", "size", "etag", "version_id", "key", "bucket"}  an object left where it is (s3:// source)
Files below PACK_LIMIT are concatenated into pack blobs of about PACK_TARGET bytes (one request fetches hundreds
of them); bigger ones are a blob each. The manifest's digest is the sha256 of the canonical JSON of its files
list: two versions with the same digest hold the same bytes under the same paths, whatever their numbers.

Nothing here does I/O: the storage adapter (slurmml.storage.datasets) scans, hashes, uploads and downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from slurmml.errors import SlurmmlError

FORMAT = 1
PACK_LIMIT = 4 * 1024 * 1024  # smaller files go into packs...
PACK_TARGET = 48 * 1024 * 1024  # ...of about this size (a pack closes at the first file that reaches it)
WHOLE_FRACTION = 0.5  # fetch a whole pack once at least this much of it is wanted, else byte ranges
RANGE_GAP = 1024 * 1024  # wanted pieces of a pack closer than this are fetched as one range
VERSION_DIGITS = 6
REFERENCE_FIELDS = ("path", "size", "etag", "version_id", "key", "bucket")
STORED_FIELDS = ("path", "size", "sha256", "blob", "offset", "length")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[vV]?(\d{1,9})")
LATEST = "latest"


# ---------------------------------------------------------------- names, keys and specs


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or "") or name.endswith(".json"):
        raise SlurmmlError(f"bad dataset name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, "
                           f"starting with a letter or digit)")
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias or "") or _VERSION.fullmatch(alias):
        raise SlurmmlError(f"bad alias {alias!r}: use a letter, then letters, digits, '.', '_' or '-' "
                           f"(not a version such as v3)")
    if alias == LATEST:
        raise SlurmmlError("`latest` is always the highest version: it cannot be set")
    return alias


def versions_prefix(name: str) -> str:
    return f"datasets/{name}/versions/"


def version_key(name: str, version: int) -> str:
    return f"{versions_prefix(name)}{version:0{VERSION_DIGITS}d}.json"


def aliases_prefix(name: str) -> str:
    return f"datasets/{name}/aliases/"


def alias_key(name: str, alias: str) -> str:
    return f"{aliases_prefix(name)}{alias}.json"


def parse_dataset_key(key: str) -> Optional[tuple[str, str, str]]:
    """`datasets/x/versions/000003.json` -> ('x', 'versions', '3'); `.../aliases/best.json` -> ('x', 'aliases',
    'best'); None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "datasets" or parts[2] not in ("versions", "aliases") \
            or not parts[3].endswith(".json"):
        return None
    stem = parts[3][:-5]
    if parts[2] == "versions":
        if not stem.isdigit():
            return None
        stem = str(int(stem))
    return parts[1], parts[2], stem


@dataclass(frozen=True)
class Spec:
    """NAME (the latest version), NAME@v3 or NAME@3 (a version), NAME@latest, NAME@ALIAS."""

    name: str
    version: Optional[int] = None
    alias: Optional[str] = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@v{self.version}"
        return f"{self.name}@{self.alias or LATEST}"


def parse_spec(text: str) -> Spec:
    name, at, selector = (text or "").strip().partition("@")
    check_name(name)
    if not at or selector == LATEST:
        return Spec(name, alias=LATEST)
    number = _VERSION.fullmatch(selector)
    if number:
        if int(number.group(1)) < 1:
            raise SlurmmlError(f"bad version in {text!r}: versions count from 1")
        return Spec(name, version=int(number.group(1)))
    if not _ALIAS.fullmatch(selector):
        raise SlurmmlError(f"bad dataset spec {text!r}: expected NAME, NAME@v3, NAME@latest or NAME@ALIAS")
    return Spec(name, alias=selector)


def version_ranges(versions: Iterable[int]) -> str:
    """[1, 2, 3, 5] -> 'v1-v3, v5'."""
    ordered = sorted(set(versions))
    parts: list[str] = []
    start = previous = None
    for number in ordered + [None]:  # type: ignore[list-item]
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(f"v{start}" if start == previous else f"v{start}-v{previous}")
        start = previous = number
    return ", ".join(parts)


def known_text(name: str, versions: Sequence[int], aliases: Mapping[str, int]) -> str:
    """What exists of a dataset, for the line that says a version or alias does not."""
    shown = [f"{LATEST} -> v{max(versions)}"] if versions else []
    shown += [f"{alias} -> v{number}" for alias, number in sorted(aliases.items())]
    text = f"{name} has {version_ranges(versions) or 'no versions'}"
    return f"{text}; aliases: {', '.join(shown)}" if shown else text


def choose_version(spec: Spec, versions: Sequence[int], aliases: Mapping[str, int]) -> int:
    """The version number `spec` names, given the dataset's versions and aliases (one line if none)."""
    if not versions:
        raise SlurmmlError(f"dataset {spec.name!r} has no versions")
    if spec.version is not None:
        if spec.version in versions:
            return spec.version
        raise SlurmmlError(f"{spec.name} has no version {spec.version}: {known_text(spec.name, versions, aliases)}")
    if spec.alias in (None, LATEST):
        return max(versions)
    if spec.alias in aliases:
        return aliases[spec.alias]
    raise SlurmmlError(f"{spec.name} has no alias {spec.alias!r}: {known_text(spec.name, versions, aliases)}")


def unknown_dataset(name: str, names: Sequence[str], where: str) -> SlurmmlError:
    listed = ", ".join(sorted(names)[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return SlurmmlError(f"no dataset {name!r} in {where}" + (f"; datasets: {listed}" if names else
                                                             "; it has no datasets yet (slurmml dataset add)"))


# ---------------------------------------------------------------- digests


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that digests are taken of: sorted keys, no blanks, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def prefixed(hex_digest: str) -> str:
    return hex_digest if hex_digest.startswith("sha256:") else f"sha256:{hex_digest}"


def bare(digest: str) -> str:
    return digest[7:] if digest.startswith("sha256:") else digest


def files_digest(files: Sequence[Mapping[str, Any]]) -> str:
    """The manifest digest: 'sha256:<hex>' of the canonical JSON of the sorted files list."""
    return "sha256:" + hashlib.sha256(canonical(sorted_files(files))).hexdigest()


def sorted_files(files: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted((dict(entry) for entry in files), key=lambda entry: entry["path"])


def check_path(path: str) -> str:
    """A file's path inside a version: relative, posix, no '.' or '..' parts (a manifest must not write outside
    the folder it is materialized into)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in path \
            or "\0" in path:
        raise SlurmmlError(f"bad file path {path!r} in a dataset manifest")
    return path


# ---------------------------------------------------------------- planning an upload


@dataclass(frozen=True)
class ScannedFile:
    """A file of the folder being added, as it was when hashed."""

    path: str  # posix, relative to the folder added
    size: int
    sha256: str  # hex
    mtime_ns: int = 0


@dataclass(frozen=True)
class Placement:
    blob: str
    offset: int
    length: int


@dataclass
class UploadPlan:
    """What a new version must upload: packs of small files and big files, the rest being reused."""

    reused: dict[str, Placement] = field(default_factory=dict)  # sha256 -> where the parent has those bytes
    packs: list[list[ScannedFile]] = field(default_factory=list)
    singles: list[ScannedFile] = field(default_factory=list)

    @property
    def new_bytes(self) -> int:
        return sum(f.size for f in self.singles) + sum(f.size for pack in self.packs for f in pack)

    @property
    def new_files(self) -> int:
        return len(self.singles) + sum(len(pack) for pack in self.packs)


def plan_upload(files: Sequence[ScannedFile], parent_files: Sequence[Mapping[str, Any]] = (),
                pack_limit: int = PACK_LIMIT, pack_target: int = PACK_TARGET) -> UploadPlan:
    """Which bytes a new version stores: a file whose sha256 the parent already holds reuses the parent's blob
    range; files with the same content are stored once; small new files go into packs (in path order, so files
    of one folder share packs), big new files are a blob each."""
    plan = UploadPlan()
    for entry in parent_files:
        if entry.get("sha256") and entry.get("blob"):
            placement = Placement(entry["blob"], int(entry["offset"]), int(entry["length"]))
            plan.reused.setdefault(entry["sha256"], placement)
    seen: set[str] = set(plan.reused)
    pack: list[ScannedFile] = []
    pack_size = 0
    for scanned in sorted(files, key=lambda f: f.path):
        if scanned.sha256 in seen:
            continue
        seen.add(scanned.sha256)
        if scanned.size >= pack_limit:
            plan.singles.append(scanned)
            continue
        pack.append(scanned)
        pack_size += scanned.size
        if pack_size >= pack_target:
            plan.packs.append(pack)
            pack, pack_size = [], 0
    if pack:
        plan.packs.append(pack)
    return plan


def pack_offsets(pack: Sequence[ScannedFile]) -> list[int]:
    """Where each file of a pack starts: a pack is its files' bytes, one after the other."""
    offsets, at = [], 0
    for scanned in pack:
        offsets.append(at)
        at += scanned.size
    return offsets


def stored_files(files: Sequence[ScannedFile], placements: Mapping[str, Placement]) -> list[dict[str, Any]]:
    """The manifest's files list: each file with where its bytes are (placements: by sha256)."""
    return sorted_files({"path": f.path, "size": f.size, "sha256": f.sha256, "blob": placements[f.sha256].blob,
                         "offset": placements[f.sha256].offset, "length": placements[f.sha256].length} for f in files)


def reference_files(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted_files({name: obj.get(name) for name in REFERENCE_FIELDS} for obj in objects)


def build_manifest(name: str, version: int, files: Sequence[Mapping[str, Any]], *, parent: Optional[int],
                   created: str, user: str, host: str, source: str, message: Optional[str] = None,
                   single_file: bool = False, stats: Optional[Mapping[str, int]] = None) -> dict[str, Any]:
    entries = sorted_files(files)
    reference = bool(entries) and "etag" in entries[0]
    blobs: dict[str, int] = {}
    for entry in entries:
        if entry.get("blob"):
            blobs[entry["blob"]] = max(blobs.get(entry["blob"], 0), int(entry["offset"]) + int(entry["length"]))
    document: dict[str, Any] = {
        "format": FORMAT, "name": name, "version": version, "parent": parent, "digest": files_digest(entries),
        "kind": "reference" if reference else "stored", "single_file": single_file, "created": created,
        "user": user, "host": host, "source": source, "message": message,
        "file_count": len(entries), "bytes": sum(int(entry["size"]) for entry in entries),
        "stats": dict(stats or {}), "files": entries,
    }
    if not reference:
        document["blobs"] = dict(sorted(blobs.items()))  # the extent of each blob a file uses (fetch planning)
    return document


def check_manifest(document: Any, where: str) -> dict[str, Any]:
    """A manifest read back: well formed, with the digest its files list has (one line if not)."""
    if not isinstance(document, dict) or not isinstance(document.get("files"), list) \
            or not isinstance(document.get("version"), int):
        raise SlurmmlError(f"{where} is not a dataset manifest")
    if document.get("format", FORMAT) > FORMAT:
        raise SlurmmlError(f"{where} has manifest format {document['format']}: upgrade slurmml to read it")
    for entry in document["files"]:
        check_path(str(entry.get("path", "")))
    if files_digest(document["files"]) != document.get("digest"):
        raise SlurmmlError(f"{where} is damaged: its files list does not match its digest {document.get('digest')}")
    return document


# ---------------------------------------------------------------- comparing versions


def identity(entry: Mapping[str, Any]) -> tuple:
    """What makes two files the same bytes: their sha256, or for a referenced object its ETag and version."""
    if entry.get("sha256"):
        return ("sha256", entry["sha256"])
    return ("object", *(entry.get(name) for name in ("bucket", "key", "etag", "version_id", "size")))


def diff(a_files: Sequence[Mapping[str, Any]], b_files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What changed from A to B: added, removed and changed files (by path), and their bytes."""
    a = {entry["path"]: entry for entry in a_files}
    b = {entry["path"]: entry for entry in b_files}
    added = [{"path": p, "size": b[p]["size"]} for p in sorted(b.keys() - a.keys())]
    removed = [{"path": p, "size": a[p]["size"]} for p in sorted(a.keys() - b.keys())]
    changed = [{"path": p, "size_a": a[p]["size"], "size_b": b[p]["size"]}
               for p in sorted(a.keys() & b.keys()) if identity(a[p]) != identity(b[p])]
    return {"added": added, "removed": removed, "changed": changed,
            "unchanged": len(a.keys() & b.keys()) - len(changed),
            "bytes_added": sum(f["size"] for f in added), "bytes_removed": sum(f["size"] for f in removed),
            "bytes_changed": sum(f["size_b"] for f in changed)}


# ---------------------------------------------------------------- planning a download


@dataclass(frozen=True)
class Fetch:
    """One request of a download: bytes [start, end) of `blob`, and the files cut out of them.

    `whole` (the whole blob, checked against its digest) or a byte range (each file checked on its own).
    `stream`: one big file that is the whole blob, written straight to its path instead of held in memory."""

    blob: str
    start: int
    end: int
    files: tuple[Mapping[str, Any], ...]
    whole: bool = False
    stream: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


def plan_download(files: Sequence[Mapping[str, Any]], blob_sizes: Mapping[str, int],
                  whole_fraction: float = WHOLE_FRACTION, gap: int = RANGE_GAP,
                  stream_from: int = PACK_LIMIT) -> list[Fetch]:
    """The requests that fetch `files` (one of each content: copies are made locally), biggest first so the
    slowest request starts first: a blob mostly wanted in one piece, else the wanted ranges, merged when close."""
    by_blob: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[str] = set()
    for entry in files:
        if entry["sha256"] in seen or not int(entry["length"]):  # empty files are made, not fetched
            continue
        seen.add(entry["sha256"])
        by_blob.setdefault(entry["blob"], []).append(entry)
    fetches: list[Fetch] = []
    for blob, entries in by_blob.items():
        entries.sort(key=lambda e: int(e["offset"]))
        size = int(blob_sizes.get(blob) or max(int(e["offset"]) + int(e["length"]) for e in entries))
        wanted = sum(int(e["length"]) for e in entries)
        if len(entries) == 1 and int(entries[0]["offset"]) == 0 and int(entries[0]["length"]) == size \
                and size >= stream_from:
            fetches.append(Fetch(blob, 0, size, tuple(entries), whole=True, stream=True))
        elif wanted >= whole_fraction * size:
            fetches.append(Fetch(blob, 0, size, tuple(entries), whole=True))
        else:
            group: list[Mapping[str, Any]] = []
            for entry in entries:
                start = int(entry["offset"])
                if group and start - (int(group[-1]["offset"]) + int(group[-1]["length"])) > gap:
                    fetches.append(_range(blob, group))
                    group = []
                group.append(entry)
            fetches.append(_range(blob, group))
    return sorted(fetches, key=lambda f: -f.size)


def _range(blob: str, group: Sequence[Mapping[str, Any]]) -> Fetch:
    start = int(group[0]["offset"])
    end = max(int(e["offset"]) + int(e["length"]) for e in group)
    return Fetch(blob, start, end, tuple(group))


def copies(files: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """For each content stored more than once under different paths: the first path -> the other paths."""
    first: dict[tuple, str] = {}
    others: dict[str, list[str]] = {}
    for entry in files:
        key = identity(entry)
        if key in first:
            others.setdefault(first[key], []).append(entry["path"])
        else:
            first[key] = entry["path"]
    return others

