"""Dataset manifests as data (slurmml.core.manifest): specs, digests, upload and download plans, diffs."""

from __future__ import annotations

import pytest

from slurmml.core import manifest as m
from slurmml.core.tables import size_text
from slurmml.errors import SlurmmlError

MiB = 1024 * 1024


def scanned(path: str, size: int, sha: str | None = None) -> m.ScannedFile:
    return m.ScannedFile(path, size, sha or (path.encode().hex() * 64)[:64])


def test_specs_name_a_version_an_alias_or_latest() -> None:
    assert m.parse_spec("mnist") == m.Spec("mnist", alias="latest")
    assert m.parse_spec("mnist@latest") == m.Spec("mnist", alias="latest")
    assert m.parse_spec("mnist@v3") == m.parse_spec("mnist@3") == m.parse_spec("mnist@V3") == m.Spec("mnist", version=3)
    assert m.parse_spec("mnist@best") == m.Spec("mnist", alias="best")
    assert str(m.parse_spec("mnist@3")) == "mnist@v3" and str(m.parse_spec("mnist")) == "mnist@latest"
    for bad in ("", "@3", "a/b", "x@", "x@v0", "x@-1", "x y", ".hidden", "x@3a!"):
        with pytest.raises(SlurmmlError):
            m.parse_spec(bad)


def test_aliases_cannot_look_like_versions_or_be_latest() -> None:
    assert m.check_alias("best") == "best"
    for bad in ("v3", "3", "latest", "", "a/b", "-x"):
        with pytest.raises(SlurmmlError):
            m.check_alias(bad)


def test_keys_follow_the_store_layout_and_parse_back() -> None:
    assert m.version_key("x", 3) == "datasets/x/versions/000003.json"
    assert m.alias_key("x", "best") == "datasets/x/aliases/best.json"
    assert m.parse_dataset_key("datasets/x/versions/000003.json") == ("x", "versions", "3")
    assert m.parse_dataset_key("datasets/x/aliases/best.json") == ("x", "aliases", "best")
    assert m.parse_dataset_key("datasets/x/versions/tmp.json") is None
    assert m.parse_dataset_key("blobs/sha256/ab/cd") is None


def test_choosing_a_version_says_what_exists_when_it_does_not() -> None:
    versions, aliases = [1, 2, 3, 5], {"best": 2}
    assert m.choose_version(m.Spec("x", version=2), versions, aliases) == 2
    assert m.choose_version(m.Spec("x", alias="latest"), versions, aliases) == 5
    assert m.choose_version(m.Spec("x", alias="best"), versions, aliases) == 2
    with pytest.raises(SlurmmlError, match=r"^x has no version 4: x has v1-v3, v5; aliases: latest -> v5, best -> v2$"):
        m.choose_version(m.Spec("x", version=4), versions, aliases)
    with pytest.raises(SlurmmlError, match="no alias 'prod'.*best -> v2"):
        m.choose_version(m.Spec("x", alias="prod"), versions, aliases)
    assert "\n" not in str(m.unknown_dataset("y", ["a", "b"], "s3://b/p")) and "datasets: a, b" in \
        str(m.unknown_dataset("y", ["b", "a"], "s3://b/p"))


def test_the_digest_is_of_the_files_list_whatever_its_order() -> None:
    files = [{"path": "b", "size": 1, "sha256": "00"}, {"path": "a", "size": 2, "sha256": "11"}]
    assert m.files_digest(files) == m.files_digest(list(reversed(files)))
    assert m.files_digest(files).startswith("sha256:") and len(m.files_digest(files)) == 71
    changed = [dict(files[0], sha256="01"), files[1]]
    assert m.files_digest(changed) != m.files_digest(files)


def test_small_files_are_packed_big_ones_stand_alone_and_known_content_is_reused() -> None:
    files = [scanned(f"d/{i:03d}", 1 * MiB) for i in range(10)] + [scanned("big", 5 * MiB),
                                                                 scanned("z-copy", 1 * MiB, scanned("d/000", 0).sha256)]
    plan = m.plan_upload(files, pack_limit=4 * MiB, pack_target=4 * MiB)
    assert [f.path for f in plan.singles] == ["big"]
    assert [[f.path for f in pack] for pack in plan.packs] == [
        ["d/000", "d/001", "d/002", "d/003"], ["d/004", "d/005", "d/006", "d/007"], ["d/008", "d/009"]]
    assert plan.new_files == 11 and plan.new_bytes == 15 * MiB  # "z-copy" has d/000's bytes: stored once
    parent = [{"path": "old", "size": MiB, "sha256": files[3].sha256, "blob": "sha256:aa", "offset": 7, "length": MiB}]
    again = m.plan_upload(files, parent, pack_limit=4 * MiB, pack_target=4 * MiB)
    assert again.reused[files[3].sha256] == m.Placement("sha256:aa", 7, MiB)
    assert "d/003" not in [f.path for pack in again.packs for f in pack] and again.new_files == 10


def test_a_manifest_lists_files_in_order_with_their_blobs_and_checks_back() -> None:
    pack = [scanned("b.txt", 3), scanned("a.txt", 4)]
    assert m.pack_offsets(pack) == [0, 3]
    placements = {pack[0].sha256: m.Placement("sha256:p", 0, 3), pack[1].sha256: m.Placement("sha256:p", 3, 4)}
    files = m.stored_files(pack, placements)
    doc = m.build_manifest("x", 1, files, parent=None, created="2024-01-01T00:00:00Z", user="u", host="h",
                           source="/data")
    assert [f["path"] for f in doc["files"]] == ["a.txt", "b.txt"]
    assert doc["blobs"] == {"sha256:p": 7} and doc["bytes"] == 7 and doc["kind"] == "stored"
    assert m.check_manifest(doc, "v1") is doc
    tampered = dict(doc, files=[dict(doc["files"][0], size=5), doc["files"][1]])
    with pytest.raises(SlurmmlError, match="damaged"):
        m.check_manifest(tampered, "v1")
    escaping = dict(doc, files=[dict(doc["files"][0], path="../etc/passwd")])
    with pytest.raises(SlurmmlError, match="bad file path"):
        m.check_manifest(escaping, "v1")


def test_reference_manifests_identify_objects_by_etag_and_version() -> None:
    objects = [{"path": "a", "size": 1, "etag": "e1", "version_id": None, "key": "p/a", "bucket": "b", "extra": 1}]
    files = m.reference_files(objects)
    assert files == [{"path": "a", "size": 1, "etag": "e1", "version_id": None, "key": "p/a", "bucket": "b"}]
    doc = m.build_manifest("r", 1, files, parent=None, created="", user="", host="", source="s3://b/p")
    assert doc["kind"] == "reference" and "blobs" not in doc
    changed = [dict(files[0], etag="e2")]
    assert m.diff(files, changed)["changed"] == [{"path": "a", "size_a": 1, "size_b": 1}]


def test_diff_tells_added_removed_and_changed_files_and_bytes() -> None:
    a = [{"path": "same", "size": 1, "sha256": "1"}, {"path": "gone", "size": 2, "sha256": "2"},
         {"path": "edit", "size": 3, "sha256": "3"}]
    b = [{"path": "same", "size": 1, "sha256": "1"}, {"path": "edit", "size": 4, "sha256": "4"},
         {"path": "new", "size": 5, "sha256": "5"}]
    d = m.diff(a, b)
    assert d["added"] == [{"path": "new", "size": 5}] and d["removed"] == [{"path": "gone", "size": 2}]
    assert d["changed"] == [{"path": "edit", "size_a": 3, "size_b": 4}] and d["unchanged"] == 1
    assert (d["bytes_added"], d["bytes_removed"], d["bytes_changed"]) == (5, 2, 4)


def entry(path: str, blob: str, offset: int, length: int, sha: str | None = None) -> dict:
    return {"path": path, "size": length, "sha256": sha or path, "blob": blob, "offset": offset, "length": length}


def test_a_download_fetches_mostly_wanted_packs_whole_and_the_rest_by_merged_ranges() -> None:
    files = [entry("a", "P", 0, 10), entry("b", "P", 10, 10),  # all of P: one whole fetch
             entry("c", "Q", 0, 10), entry("d", "Q", 15, 10), entry("e", "Q", 5000, 10),  # 30 of 10_000 bytes
             entry("big", "B", 0, 100), entry("dup", "P", 0, 10, sha="a")]
    plan = m.plan_download(files, {"P": 20, "Q": 10_000, "B": 100}, gap=100, stream_from=50)
    shapes = sorted((f.blob, f.start, f.end, f.whole, f.stream, tuple(e["path"] for e in f.files)) for f in plan)
    assert shapes == [("B", 0, 100, True, True, ("big",)), ("P", 0, 20, True, False, ("a", "b")),
                      ("Q", 0, 25, False, False, ("c", "d")), ("Q", 5000, 5010, False, False, ("e",))]
    assert plan[0].blob == "B"  # biggest first
    assert m.copies(files) == {"a": ["dup"]}


def test_sizes_read_as_people_count_them() -> None:
    assert [size_text(n) for n in (0, 999, 1000, 1_500_000, 3.2e9)] == ["0 B", "999 B", "1 KB", "1.5 MB", "3.2 GB"]
    assert m.version_ranges([5, 1, 2, 3]) == "v1-v3, v5" and m.version_ranges([]) == ""
