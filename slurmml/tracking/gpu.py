"""GPU sampling for a running job: NVML wrapped once, lazily; values NVML cannot give are None.

`Nvml` is the adapter (docs/architecture.md, "Layers"): it imports pynvml on first use, never at module level, and
turns every NVML error into a not-available value. Pass `Nvml(module)` with a pynvml-like object
to use another binding (tests pass a fake one: the only fake of hardware in this project).

`GpuSampler(writer).start()` writes one `gpu` record per visible GPU every `interval_s`:
  {"k": "gpu", "t": .., "gpu": <CUDA ordinal: the position in CUDA_VISIBLE_DEVICES, as in cuda:N>,
   "uuid": <the physical GPU or MIG device>, "util": %, "mem_used": MiB, "mem_total": MiB, "power": W, "temp": C}
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

MIB = 1024 * 1024
_UNSET = object()


class Nvml:
    """The NVML adapter. `available` initialises NVML once; every query returns None when NVML can't answer."""

    def __init__(self, module: Any = None) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._initialised: Optional[bool] = None
        self.reason = ""  # why NVML is not available

    @property
    def available(self) -> bool:
        if self._initialised is None:
            with self._lock:
                if self._initialised is None:
                    self._initialised = self._init()
        return self._initialised

    def _init(self) -> bool:
        if self._module is None:
            try:
                import pynvml  # the adapter is the only place that imports it
            except ImportError as error:
                self.reason = f"pynvml not installed: {error}"
                return False
            self._module = pynvml
        try:
            self._module.nvmlInit()
        except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: NVML is just not there
            self.reason = f"nvmlInit failed: {error}"
            return False
        return True

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self._module, function)(*args)
        except Exception:  # any NVML error (not supported, lost GPU, ...) means "no value"
            return None

    def device_count(self) -> int:
        return (self._call("nvmlDeviceGetCount") or 0) if self.available else 0

    def handle_by_index(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index) if self.available else None

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", uuid) if self.available else None

    def uuid(self, handle: Any) -> Optional[str]:
        value = self._call("nvmlDeviceGetUUID", handle)
        return value.decode() if isinstance(value, bytes) else value

    def utilization(self, handle: Any) -> Optional[float]:
        rates = self._call("nvmlDeviceGetUtilizationRates", handle)
        return _number(getattr(rates, "gpu", None))

    def memory(self, handle: Any) -> tuple[Optional[float], Optional[float]]:
        info = self._call("nvmlDeviceGetMemoryInfo", handle)
        used, total = _number(getattr(info, "used", None)), _number(getattr(info, "total", None))
        return (None if used is None else round(used / MIB, 1), None if total is None else round(total / MIB, 1))

    def power(self, handle: Any) -> Optional[float]:
        milliwatts = _number(self._call("nvmlDeviceGetPowerUsage", handle))
        return None if milliwatts is None else round(milliwatts / 1000, 1)

    def temperature(self, handle: Any) -> Optional[float]:
        sensor = getattr(self._module, "NVML_TEMPERATURE_GPU", 0)
        return _number(self._call("nvmlDeviceGetTemperature", handle, sensor))


def _number(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class VisibleGpu:
    ordinal: int  # cuda:N in the job
    uuid: Optional[str]
    handle: Any


def visible_gpus(nvml: Nvml, cuda_visible_devices: Optional[str]) -> list[VisibleGpu]:
    """The GPUs a job sees, by CUDA_VISIBLE_DEVICES: indices ("0,2"), UUIDs or UUID prefixes ("GPU-8a3f..."),
    MIG UUIDs ("MIG-..."); unset means all GPUs. Entries NVML can't map (old "MIG-GPU-../gi/ci" form,
    "NoDevFiles", out-of-range indices) are skipped. Indices are read as NVML indices (PCI bus order).
    Slurm writes indices that match NVML's view: global ones, or, with ConstrainDevices, indices relative
    to the job's GPUs, which are then the only ones NVML lists. CUDA orders the same way when
    CUDA_DEVICE_ORDER=PCI_BUS_ID; UUIDs are unambiguous either way."""
    if not nvml.available:
        return []
    if cuda_visible_devices is None:
        entries = [str(index) for index in range(nvml.device_count())]
    else:
        entries = [entry.strip() for entry in cuda_visible_devices.split(",") if entry.strip()]
    gpus: list[VisibleGpu] = []
    seen: set[str] = set()
    count: Any = _UNSET
    for ordinal, entry in enumerate(entries):
        handle = None
        if entry.isdigit():
            if count is _UNSET:
                count = nvml.device_count()
            if int(entry) < count:
                handle = nvml.handle_by_index(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            handle = nvml.handle_by_uuid(entry) or _by_uuid_prefix(nvml, entry)
        if handle is None:
            continue
        uuid = nvml.uuid(handle)
        key = uuid or entry
        if key in seen:
            continue
        seen.add(key)
        gpus.append(VisibleGpu(ordinal, uuid, handle))
    return gpus


def _by_uuid_prefix(nvml: Nvml, prefix: str) -> Any:
    """CUDA accepts a unique prefix of a GPU's UUID."""
    if not prefix.startswith("GPU-"):
        return None
    matches = []
    for index in range(nvml.device_count()):
        handle = nvml.handle_by_index(index)
        uuid = nvml.uuid(handle) if handle is not None else None
        if uuid and uuid.startswith(prefix):
            matches.append(handle)
    return matches[0] if len(matches) == 1 else None


def gpus_given(environ: Mapping[str, str]) -> bool:
    """Whether this job was given GPUs, so that missing NVML is worth saying.

    Under Slurm the allocation decides: Slurm sets SLURM_JOB_GPUS / SLURM_STEP_GPUS / SLURM_GPUS_ON_NODE
    for GPUs asked any way (gpus_per_node, gres, a template's #SBATCH line, additional_parameters), while
    CUDA_VISIBLE_DEVICES may be inherited from the submitting shell. Outside Slurm nothing is allocated,
    so a CUDA_VISIBLE_DEVICES naming a device is the only sign that GPUs are meant to be used.
    """
    if environ.get("SLURM_JOB_ID"):
        count = environ.get("SLURM_GPUS_ON_NODE", "").strip()
        return bool(environ.get("SLURM_JOB_GPUS", "").strip() or environ.get("SLURM_STEP_GPUS", "").strip()
                    or (count.isdigit() and int(count) > 0))
    visible = [entry.strip() for entry in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return any(entry and entry not in ("NoDevFiles", "-1") for entry in visible)


class GpuSampler:
    """A daemon thread writing `gpu` records to `writer` every `interval_s`; NVML is initialised in the thread.

    `gpus_expected` (default: `gpus_given(os.environ)`): say so on stderr when NVML is missing; a CPU job stays quiet.
    """

    def __init__(self, writer: Any, interval_s: float = 5.0, nvml: Optional[Nvml] = None,
                 cuda_visible_devices: Any = _UNSET, clock: Callable[[], float] = time.time,
                 gpus_expected: Optional[bool] = None) -> None:
        self.writer = writer
        self.interval_s = interval_s
        self.nvml = nvml if nvml is not None else Nvml()
        self.cuda_visible_devices = (os.environ.get("CUDA_VISIBLE_DEVICES")
                                     if cuda_visible_devices is _UNSET else cuda_visible_devices)
        self.gpus_expected = gpus_given(os.environ) if gpus_expected is None else gpus_expected
        self.clock = clock
        self.gpus: list[VisibleGpu] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._reported = False

    def start(self) -> "GpuSampler":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="slurmml-gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop_and_close(self) -> None:
        """Stop, and close a writer of the sampler's own (a node's GPU file)."""
        self.stop()
        self.writer.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def __enter__(self) -> "GpuSampler":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self) -> None:
        if not self.nvml.available:
            if self.gpus_expected:
                _info(f"slurmml: no NVML ({self.nvml.reason}): GPU sampling off")
            return
        self.gpus = visible_gpus(self.nvml, self.cuda_visible_devices)
        if not self.gpus:
            return
        while True:  # one sample at once (even if stopped already: a short job gets one), then every interval
            try:
                self.sample()
            except Exception as error:  # sampling must never take the job down; say so once
                if not self._reported:
                    self._reported = True
                    _info(f"slurmml: GPU sampling failed ({type(error).__name__}: {error}); still trying")
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        """Write one record per visible GPU (visible_gpus must have been resolved)."""
        nvml = self.nvml
        now = self.clock()
        for gpu in self.gpus:
            used, total = nvml.memory(gpu.handle)
            self.writer.write({
                "k": "gpu", "t": now, "gpu": gpu.ordinal, "uuid": gpu.uuid, "util": nvml.utilization(gpu.handle),
                "mem_used": used, "mem_total": total, "power": nvml.power(gpu.handle),
                "temp": nvml.temperature(gpu.handle),
            })


def _info(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except Exception:
        pass
