"""Registry reads for interactive views (slurmml.registry.browse), on registries filled by real spools and ingest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from slurmml.errors import SlurmmlError
from slurmml.registry import browse
from slurmml.registry.registry import Registry
from slurmml.tracking.spool import encode

# run id -> (optimizer.lr, model, dataset, val_acc values in step order, loss values, end state or None)
RUNS = {
    "s1-0": (0.1, "mlp", "mnist", [0.5, 0.9], [0.6, 0.3], "COMPLETED"),
    "s1-1": (0.01, "mlp", "cifar", [0.4, 0.7], [0.5, 0.2], "FAILED"),
    "s1-2": (0.001, "cnn", "mnist", [0.5, 0.95, math.nan], [0.4, math.nan], None),  # diverged, still running
    "s2-0": (0.05, "cnn", "cifar", [0.8], [0.7], "COMPLETED"),
    "s2-1": (0.001, "mlp", "mnist", [0.6, 0.85], [0.1], "COMPLETED"),
}


def spool(path: Path, *records: dict) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(encode(r) for r in records))


def run_records(run_id: str) -> list[dict]:
    lr, model, dataset, accs, losses, end = RUNS[run_id]
    t = 1000.0 + int(run_id[1]) * 100 + int(run_id[-1]) * 10
    records: list[dict] = [{"k": "start", "t": t, "host": f"node{run_id[-1]}", "pid": 4242, "run_dir": f"/out/{run_id}",
                            "config": {"optimizer": {"lr": lr, "name": "adam"}, "model": model, "dataset": dataset,
                                       "seed": int(run_id[-1])}}]
    records += [{"k": "m", "t": t + 1 + s, "s": s, "v": {"val_acc": v}} for s, v in enumerate(accs)]
    records += [{"k": "m", "t": t + 1 + s, "s": s, "v": {"loss": v}} for s, v in enumerate(losses)]
    if end:
        records.append({"k": "end", "t": t + 9, "state": end, "exit_code": 0 if end == "COMPLETED" else 1,
                        **({"error": "RuntimeError: boom"} if end == "FAILED" else {})})
    return records


def gpu(t: float, index: int, util: float, used: float, total: float = 16.0) -> dict:
    return {"k": "gpu", "t": t, "gpu": index, "uuid": f"GPU-{index}", "util": util, "mem_used": used,
            "mem_total": total, "power": 100.0, "temp": 50.0}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """Sweep s2 (bob) recorded before sweep s1 (alice, named 'grid'); s1-3 is queued and never started."""
    registry = Registry(tmp_path / "registry.db")
    for sweep, user, name, count in (("s2", "bob", None, 2), ("s1", "alice", "grid", 4)):
        registry.add_sweep({"id": sweep, "name": name, "user": user, "created": 1.0, "argv": ["train.py", "-m"],
                            "sweep_dir": str(tmp_path), "backend": "slurm"},
                           [{"id": f"{sweep}-{i}", "job_num": i, "overrides": [f"task={i}", f"sweep={sweep}"],
                             "spool_path": str(tmp_path / f"{sweep}-{i}.jsonl")} for i in range(count)])
        registry.mark_queued({f"{sweep}-{i}": (f"{sweep[1]}00_{i}", str(tmp_path / f"{sweep}-{i}.err"))
                              for i in range(count)})
    for run_id in RUNS:
        spool(tmp_path / f"{run_id}.jsonl", *run_records(run_id))
    spool(tmp_path / "s1-0.jsonl", {"k": "p", "t": 1200.0, "v": {"batch": 32}},
          gpu(1101.0, 0, 10.0, 1.0), gpu(1101.0, 1, 30.0, 3.0))  # GPU samples of an ended run
    spool(tmp_path / "s1-2.jsonl", gpu(1121.0, 0, 50.0, 4.0), gpu(1121.0, 1, 70.0, 8.0),
          gpu(1131.0, 0, 90.0, 16.0), gpu(1131.2, 1, 100.0, 16.0))
    report = registry.ingest()
    assert report.problems == []
    return registry


def by_id(rows: list[tuple]) -> dict[str, tuple]:
    return {row[1]: row for row in rows}


def test_run_list_has_every_run_oldest_first_with_owner_and_sweep_name(registry: Registry) -> None:
    rows = browse.run_list(registry.conn)
    assert [row[1] for row in rows] == ["s2-0", "s2-1", "s1-0", "s1-1", "s1-2", "s1-3"]
    created = [row[7] for row in rows]
    assert created == sorted(created)
    key, run_id, sweep, job_num, state, job, host, _, started, ended, restarts, overrides, parent, owner, name, result, \
        direction = by_id(rows)["s1-1"]
    assert isinstance(key, int)
    assert (run_id, sweep, job_num, state, job, host) == ("s1-1", "s1", 1, "FAILED", "100_1", "node1")
    assert (started, ended, restarts, overrides, parent, owner, name) == (1110.0, 1119.0, 0, "task=1 sweep=s1", None,
                                                                         "alice", "grid")
    assert (result, direction) == (None, None)
    queued = by_id(rows)["s1-3"]
    assert queued[4] == "QUEUED" and queued[6] is None and queued[8] is None
    assert by_id(rows)["s1-2"][4] == "RUNNING" and by_id(rows)["s2-0"][13:15] == ("bob", None)


def test_run_list_of_a_plain_script_run(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db")
    folder = tmp_path / "runs" / "local-1"
    folder.mkdir(parents=True)
    spool(folder / "spool.jsonl", {"k": "start", "t": 5.0, "host": "elsewhere", "pid": 1, "config": None},
          {"k": "m", "t": 6.0, "s": 0, "v": {"loss": 1.5}}, {"k": "end", "t": 7.0, "state": "COMPLETED"})
    registry.refresh(tmp_path / "runs")
    ((key, run_id, sweep, job_num, state, *_, overrides, parent, owner, name, _, _),) = browse.run_list(registry.conn)
    assert (run_id, sweep, job_num, state, overrides, parent, owner, name) == ("local-1", None, None, "COMPLETED", "",
                                                                              None, None, None)
    assert browse.metric_summaries(registry.conn) == {key: {"loss": (1.5, 1.5, 1.5)}}


def test_metric_summaries_last_min_max_with_nan_left_out(registry: Registry) -> None:
    keys = {row[1]: row[0] for row in browse.run_list(registry.conn)}
    summaries = browse.metric_summaries(registry.conn)
    assert summaries[keys["s1-0"]] == {"val_acc": (0.9, 0.5, 0.9), "loss": (0.3, 0.3, 0.6)}
    assert summaries[keys["s1-2"]] == {"val_acc": (None, 0.5, 0.95), "loss": (None, 0.4, 0.4)}  # NaN last: unknown
    assert keys["s1-3"] not in summaries
    assert browse.metric_names(registry.conn) == ["val_acc", "loss"]  # in the order first seen


@pytest.mark.parametrize("expressions, ids", [
    ([], {"s1-0", "s1-1", "s1-2", "s1-3", "s2-0", "s2-1"}),
    (["optimizer.lr<0.01"], {"s1-2", "s2-1"}),
    (["lr<0.01"], {"s1-2", "s2-1"}),  # a dotted suffix of a config key
    (["lr>=0.05"], {"s1-0", "s2-0"}),
    (["model=mlp"], {"s1-0", "s1-1", "s2-1"}),
    (["model='cnn'"], {"s1-2", "s2-0"}),
    (["model!=mlp"], {"s1-2", "s2-0"}),
    (["val_acc>0.75"], {"s1-0", "s2-0", "s2-1"}),  # a metric's last value; NaN (s1-2) never matches
    (["loss<=0.3"], {"s1-0", "s1-1", "s2-1"}),
    (["state=FAILED"], {"s1-1"}),
    (["state=QUEUED"], {"s1-3"}),
    (["sweep_id=s2"], {"s2-0", "s2-1"}),
    (["job_num>=2"], {"s1-2", "s1-3"}),
    (["model=mlp", "val_acc>0.75"], {"s1-0", "s2-1"}),
    (["model=mlp", "dataset=cifar", "lr<0.05"], {"s1-1"}),
    (["nosuch=1"], set()),
    (["model=x' OR '1'='1"], set()),  # bound as a value
])
def test_matching_run_ids(registry: Registry, expressions: list[str], ids: set[str]) -> None:
    assert browse.matching_run_ids(registry.conn, expressions) == ids


@pytest.mark.parametrize("expression, ids", [("slurm_job_id=100_2", {"s1-2"}), ("slurm_job_id=100_0", {"s1-0"})])
def test_matching_a_slurm_job_id(registry: Registry, expression: str, ids: set[str]) -> None:
    assert browse.matching_run_ids(registry.conn, [expression]) == ids


@pytest.mark.parametrize("bad, message", [("lr<abc", "is not a number"), ("lr 0.01", "cannot read filter"),
                                          ("<3", "cannot read filter")])
def test_a_bad_expression_is_a_clear_error(registry: Registry, bad: str, message: str) -> None:
    with pytest.raises(SlurmmlError, match=message):
        browse.matching_run_ids(registry.conn, ["model=mlp", bad])


def ranking(rows: list[dict]) -> list[tuple]:
    return [(row["rank"], row["id"], row["value"]) for row in rows]


def test_leaderboard_highest_or_lowest_first_never_a_nan_nor_a_failed_run(registry: Registry) -> None:
    assert ranking(browse.leaderboard(registry.conn, "val_acc", "max")) == [
        (1, "s1-0", 0.9), (2, "s2-1", 0.85), (3, "s2-0", 0.8)]
    assert ranking(browse.leaderboard(registry.conn, "val_acc", "min")) == [  # s1-1 (0.7) FAILED: never best
        (1, "s2-0", 0.8), (2, "s2-1", 0.85), (3, "s1-0", 0.9)]
    assert ranking(browse.leaderboard(registry.conn, "val_acc")) == ranking(browse.leaderboard(registry.conn, "val_acc", "max"))
    assert ranking(browse.leaderboard(registry.conn, "loss")) == ranking(browse.leaderboard(registry.conn, "loss", "min"))
    assert ranking(browse.leaderboard(registry.conn, "val_acc", "max", limit=2)) == [(1, "s1-0", 0.9), (2, "s2-1", 0.85)]
    top = browse.leaderboard(registry.conn, "loss", "min")[0]
    assert top == {"id": "s2-1", "sweep_id": "s2", "job_num": 1, "state": "COMPLETED", "overrides": "task=1 sweep=s2",
                   "value": 0.1, "step": 0, "group": None, "rank": 1}
    assert "s1-2" not in {row["id"] for row in browse.leaderboard(registry.conn, "loss", "max")}
    assert browse.leaderboard(registry.conn, "nosuch", "max") == []


def test_leaderboard_of_one_sweep(registry: Registry) -> None:
    assert ranking(browse.leaderboard(registry.conn, "val_acc", "max", sweep="s1")) == [(1, "s1-0", 0.9)]
    assert ranking(browse.leaderboard(registry.conn, "val_acc", "min", sweep="s2")) == [(1, "s2-0", 0.8),
                                                                                        (2, "s2-1", 0.85)]


def test_leaderboard_ranks_within_each_value_of_a_config_key(registry: Registry) -> None:
    rows = browse.leaderboard(registry.conn, "val_acc", "max", group_key="dataset")
    assert [(row["group"], row["rank"], row["id"]) for row in rows] == [
        ("cifar", 1, "s2-0"), ("mnist", 1, "s1-0"), ("mnist", 2, "s2-1")]
    rows = browse.leaderboard(registry.conn, "val_acc", "min", group_key="model", limit=1)
    assert [(row["group"], row["rank"], row["id"]) for row in rows] == [("cnn", 1, "s2-0"), ("mlp", 1, "s2-1")]
    rows = browse.leaderboard(registry.conn, "val_acc", "max", sweep="s2", group_key="lr")  # dotted suffix
    assert [(row["group"], row["rank"], row["id"]) for row in rows] == [(0.001, 1, "s2-1"), (0.05, 1, "s2-0")]
    assert browse.leaderboard(registry.conn, "val_acc", "max", group_key="nosuch") == []


def test_gpu_series_averages_the_gpus_of_each_sample(registry: Registry) -> None:
    assert browse.gpu_series(registry.conn, "s1-2") == {"util": [60.0, 95.0], "memory": [37.5, 100.0]}
    assert browse.gpu_series(registry.conn, "s1-0") == {"util": [20.0], "memory": [12.5]}
    assert browse.gpu_series(registry.conn, "s2-0") == {"util": [], "memory": []}
    assert browse.gpu_series(registry.conn, "nosuch") == {"util": [], "memory": []}


def test_gpu_series_is_downsampled_keeping_the_ends(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db")
    registry.add_sweep({"id": "s", "user": "u"}, [{"id": "s-0", "job_num": 0, "spool_path": str(tmp_path / "0.jsonl")}])
    spool(tmp_path / "0.jsonl", *(gpu(100.0 + i, 0, float(i), 8.0) for i in range(50)))
    registry.ingest()
    series = browse.gpu_series(registry.conn, "s-0", max_points=5)
    assert len(series["util"]) == 5 and series["util"][0] == 0.0 and series["util"][-1] == 49.0
    assert series["memory"] == [50.0] * 5


def test_live_gpu_util_only_for_running_runs(registry: Registry) -> None:
    keys = {row[1]: row[0] for row in browse.run_list(registry.conn)}
    assert browse.live_gpu_util(registry.conn) == {keys["s1-2"]: 95.0}  # s1-0 has samples but has ended


def test_config_maps_in_the_order_asked(registry: Registry) -> None:
    maps = browse.config_maps(registry.conn, ["s2-0", "s1-0", "s1-3"])
    assert maps[0] == {"dataset": "cifar", "model": "cnn", "optimizer.lr": 0.05, "optimizer.name": "adam", "seed": 0}
    assert maps[1] == {"batch": 32, "dataset": "mnist", "model": "mlp", "optimizer.lr": 0.1, "optimizer.name": "adam",
                       "seed": 0}  # logged params join the config
    assert maps[2] == {}  # not started: no config yet
    assert browse.config_maps(registry.conn, []) == []


def test_data_version_changes_after_a_write_by_another_connection(registry: Registry, tmp_path: Path) -> None:
    reader = Registry(registry.path)
    before = browse.data_version(reader.conn)
    assert browse.data_version(reader.conn) == before  # nothing changed
    spool(tmp_path / "s1-2.jsonl", {"k": "m", "t": 1140.0, "s": 3, "v": {"val_acc": 0.96}})
    assert registry.ingest().points == 1  # another connection writes
    after = browse.data_version(reader.conn)
    assert after != before and after[0] != before[0] and after[1] == before[1]
    assert browse.data_version(reader.conn) == after
    reader.mark_final({"s1-3": ("CANCELLED", "by test")}, source="user")  # the reader's own write
    own = browse.data_version(reader.conn)
    assert own[1] > after[1]
