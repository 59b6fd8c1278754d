"""Pure planning: check a request against the cluster, split it into arrays, shape submitit's parameters."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from slurmml.errors import SlurmmlError
from slurmml.slurm.parse import Partition

# Fields that are not sbatch parameters for submitit's update_parameters: slurmml's own, and `python`
# (the command that starts the task, as in submitit's executor).
SLURMML_ONLY = {
    "_target_", "submitit_folder", "max_num_timeout", "template", "wait", "dry_run", "poll_interval_s", "max_array_size",
    "use_srun", "gpu_sample_interval_s", "python", "nproc_per_node", "datasets", "early_stop",
}
# Fields submitit's AutoExecutor knows under their plain name; the rest take a "slurm_" prefix.
GENERIC = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name", "stderr_to_stdout"}
MIN_POLL_INTERVAL_S = 5.0


@dataclass(frozen=True)
class ArrayChunk:
    offset: int  # index of the chunk's first task within the batch
    count: int


def split_into_arrays(num_tasks: int, max_array_size: int) -> list[ArrayChunk]:
    """Array indices run from 0 to count-1 and must stay below MaxArraySize."""
    if num_tasks <= 0:
        return []
    size = max(1, max_array_size)
    return [ArrayChunk(offset, min(size, num_tasks - offset)) for offset in range(0, num_tasks, size)]


# Numbers that must be at least 1, with what Slurm (or slurmml) would make of a smaller one.
_AT_LEAST_ONE = {
    "timeout_min": "Slurm reads 0 or less as no time limit",
    "mem_gb": "Slurm reads 0 as all of each node's memory",
    "array_parallelism": "Slurm reads %0 as no throttle",
    "max_array_size": "",
    "cpus_per_task": "", "cpus_per_gpu": "", "tasks_per_node": "", "nodes": "", "nproc_per_node": "",
}
_NOT_NEGATIVE = ("gpus_per_node", "gpus_per_task", "signal_delay_s", "max_num_timeout")  # 0 GPUs: a CPU job
_MEMORY = ("mem_per_cpu", "mem_per_gpu")  # sbatch sizes: "4G", "4000" (MB)
_MEMORY_AMOUNT = re.compile(r"\s*(-?\d+(?:\.\d*)?)\s*[KMGT]?B?\s*", re.IGNORECASE)


def check_fields(conf: Mapping[str, Any]) -> None:
    """Refuse numbers Slurm would read as "no limit" (or that mean nothing), before anything is written."""
    for name, why in _AT_LEAST_ONE.items():
        value = conf.get(name)
        if value is not None and value < 1:
            raise SlurmmlError(f"{name}={value} must be at least 1" + (f" ({why})" if why else ""))
    for name in _NOT_NEGATIVE:
        value = conf.get(name)
        if value is not None and value < 0:
            raise SlurmmlError(f"{name}={value} must not be negative")
    for name in _MEMORY:  # sizes sbatch cannot read are left to sbatch to refuse
        value = conf.get(name)
        amount = _MEMORY_AMOUNT.fullmatch(str(value)) if value is not None else None
        if amount and float(amount.group(1)) <= 0:
            raise SlurmmlError(f"{name}={value} must be more than 0 (Slurm reads 0 as all of each node's memory)")
    if conf.get("nproc_per_node") and (conf.get("tasks_per_node") or 1) > 1:
        raise SlurmmlError(f"nproc_per_node={conf['nproc_per_node']} starts torchrun as one task per node: "
                           f"leave tasks_per_node at 1 (not {conf['tasks_per_node']})")
    interval = conf.get("gpu_sample_interval_s")
    if interval is not None and interval <= 0:
        raise SlurmmlError(f"gpu_sample_interval_s={interval:g} must be more than 0")


def early_stop_rule(conf: Mapping[str, Any], declared: Optional[str]) -> Optional[dict[str, Any]]:
    """The launcher's `early_stop` field as a checked rule (core/early_stop.py), None without one; one line for a bad
    one, before anything is written. `declared`: the direction the sweeper declared for its objective."""
    spec = conf.get("early_stop")
    if isinstance(spec, Mapping):
        spec = {key: value for key, value in spec.items() if value is not None}
    if not spec:
        return None
    from slurmml.core.early_stop import parse_rule, rule_to_dict

    if not isinstance(spec, Mapping):
        raise SlurmmlError(f"early_stop must be a mapping such as {{metric: val_loss, rule: hyperband}}, not {spec!r}")
    try:
        return rule_to_dict(parse_rule(dict(spec), declared))
    except ValueError as error:
        raise SlurmmlError(str(error)) from None


def warning_lead_s(conf: Mapping[str, Any]) -> int:
    """Seconds before the time limit that Slurm is asked to send the warning signal: signal_delay_s, but at most
    a quarter of the limit. slurmctld sends it at its first time-limit check (every 30 s) past EndTime - lead -
    30 s, so it comes up to a minute early: with a 1-minute limit and a 30 s lead, at the job's start, every
    time. A quarter (15 s of a minute) leaves a short job some training and still the time to save."""
    lead = int(conf.get("signal_delay_s") if conf.get("signal_delay_s") is not None else 120)
    limit_s = int(conf.get("timeout_min") or 0) * 60
    return min(lead, limit_s // 4) if limit_s else lead


def torchrun_command(python: str, task_args: list[str], nproc_per_node: int, lead_s: int) -> str:
    """The shell command each node's task runs in torchrun mode: torch.distributed.run with a static rendezvous
    at the allocation's first node on the job-seeded port (core.distributed.master_port's rule).

    Slurm signals every process of a job step, so the workers get the warning (USR2) themselves. torchrun
    must not act on it: told to handle a signal, it forwards it and then stops its workers with TERM at once,
    before they reach a checkpoint point. So it starts with USR2 ignored (kept across exec; the workers'
    slurmml handler takes it back), and on TERM it gives its workers the warning's lead to flush and end."""
    module_args = shlex.join(task_args[task_args.index("-m") + 1:])  # torchrun runs `python -u -m` itself
    script = (f"trap '' USR2; exec {python} -m torch.distributed.run --nnodes=\"$SLURM_JOB_NUM_NODES\" "
              f"--node-rank=\"$SLURM_NODEID\" --nproc-per-node={int(nproc_per_node)} "
              f"--master-addr=\"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\" "
              f"--master-port=$((20000 + SLURM_JOB_ID % 10000)) --shutdown-timeout={max(10, int(lead_s))} "
              f"-m {module_args}")
    return "bash -c " + shlex.quote(script)


def throttle_note(array_parallelism: Optional[int], array_sizes: list[int]) -> str:
    """What the launch message says about --array=...%N: submitit caps N at each array's size, so say it
    only when it holds some tasks back."""
    if not array_parallelism or not array_sizes or array_parallelism >= max(array_sizes):
        return ""
    return f", at most {array_parallelism} at once" + (" per array" if len(array_sizes) > 1 else "")


def check_request(conf: Mapping[str, Any], partitions: list[Partition]) -> Optional[str]:
    """One line saying why no node of the chosen partition can run this job, or None."""
    if not partitions:
        return None
    wanted = conf.get("partition")
    if wanted:
        names = [p.strip() for p in str(wanted).split(",")]
        unknown = [n for n in names if n not in {p.name for p in partitions}]
        if unknown:
            known = ", ".join(p.name for p in partitions)
            return f"unknown partition '{unknown[0]}' (this cluster has: {known})"
        chosen = [p for p in partitions if p.name in names]
    else:
        chosen = [p for p in partitions if p.default] or partitions
    where = "partition " + ",".join(p.name for p in chosen)
    gpus = conf.get("gpus_per_node") or 0
    if conf.get("gpus_per_task"):
        gpus = max(gpus, conf["gpus_per_task"] * (conf.get("tasks_per_node") or 1))
    most_gpus = max(p.gpus_per_node for p in chosen)
    if gpus > most_gpus:
        return f"gpus_per_node={gpus} but no node in {where} has more than {most_gpus} GPUs"
    cpus = (conf.get("cpus_per_task") or 1) * (conf.get("tasks_per_node") or 1)
    most_cpus = max(p.cpus_per_node for p in chosen)
    if cpus > most_cpus:
        return f"{cpus} CPUs per node requested (cpus_per_task x tasks_per_node) but nodes in {where} have at most {most_cpus}"
    mem_gb = conf.get("mem_gb")
    most_mem_mb = max(p.mem_mb_per_node for p in chosen)
    if mem_gb and most_mem_mb and mem_gb * 1024 > most_mem_mb:
        return f"mem_gb={mem_gb} but nodes in {where} have at most {most_mem_mb // 1024} GB"
    nodes = conf.get("nodes") or 1
    most_nodes = max(p.nodes for p in chosen)  # a job runs in one partition; partitions may share nodes
    if nodes > most_nodes:
        return f"nodes={nodes} but {where} has {most_nodes} node(s)"
    limits = [p.max_time_min for p in chosen]
    if None not in limits and conf.get("timeout_min", 0) > max(limits):  # type: ignore[type-var]
        return f"timeout_min={conf['timeout_min']} is over the {max(limits)} min limit of {where}"  # type: ignore[type-var]
    return None


@dataclass(frozen=True)
class Template:
    sbatch_options: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


def parse_template(text: str, origin: str) -> Template:
    """A template is a shell fragment: `#SBATCH --opt=value` lines become options, other lines run before the task."""
    options: dict[str, str] = {}
    setup: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#!") and number == 1:
            continue
        if stripped.startswith("#SBATCH"):
            words = shlex.split(stripped[len("#SBATCH"):])
            if not words or not words[0].startswith("--"):
                raise SlurmmlError(f"{origin}:{number}: write #SBATCH options in long form, e.g. '#SBATCH --qos=high'")
            key, sep, value = words[0][2:].partition("=")
            if not sep:
                value = words[1] if len(words) > 1 else ""
            options[key.replace("_", "-")] = value
        elif stripped and not stripped.startswith("#"):
            setup.append(line.rstrip())
    return Template(options, setup)


def submitit_parameters(conf: Mapping[str, Any], template: Template) -> dict[str, Any]:
    """Our config as keyword arguments for submitit.AutoExecutor.update_parameters."""
    params: dict[str, Any] = {}
    for key, value in conf.items():
        if key in SLURMML_ONLY or value is None:
            continue
        if key == "additional_parameters":
            value = {**template.sbatch_options, **dict(value)}
        if key == "setup":
            continue
        params[key if key in GENERIC else f"slurm_{key}"] = value
    if "slurm_signal_delay_s" in params:
        params["slurm_signal_delay_s"] = warning_lead_s(conf)
    if "slurm_additional_parameters" not in params and template.sbatch_options:
        params["slurm_additional_parameters"] = dict(template.sbatch_options)
    setup = [*template.setup, *(conf.get("setup") or [])]
    if setup:
        params["slurm_setup"] = setup
    return params


def log_folder(submitit_folder: str) -> str:
    """Where task logs go: submitit_folder without a `%j` component (Slurm cannot create a folder per job)."""
    parts = [part for part in submitit_folder.split("/") if "%j" not in part]
    return "/".join(parts) or "."


def check_poll_interval(seconds: float) -> float:
    if seconds < MIN_POLL_INTERVAL_S:
        raise SlurmmlError(f"poll_interval_s={seconds:g} is below {MIN_POLL_INTERVAL_S:g} s: the controller is shared")
    return seconds


# Variables a job inherits that would leak into a job it submits (nested sweeps).
_INHERITED_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_", "SUBMITIT_")
_DISTRIBUTED = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
_KEEP = {"SLURM_CONF"}  # where the site's slurm.conf lives: the child needs it too


def inherited_job_variables(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in _KEEP and (n.startswith(_INHERITED_PREFIXES) or n in _DISTRIBUTED)]


def job_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for what a launch starts (sbatch, a local task): `environ` without the variables of
    the job this launch may itself run in."""
    hidden = set(inherited_job_variables(environ))
    return {name: value for name, value in environ.items() if name not in hidden}
