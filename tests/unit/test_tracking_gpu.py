"""The GPU sampler through the real NVML adapter over a fake pynvml module (these machines have no GPU)."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest

from slurmml.tracking.gpu import GpuSampler, Nvml, gpus_given, visible_gpus

UUIDS = ["GPU-0a0a0a0a-1111-2222-3333-444444444444", "GPU-1b1b1b1b-5555-6666-7777-888888888888"]
MIG_UUID = "MIG-9c9c9c9c-aaaa-bbbb-cccc-dddddddddddd"


class NVMLError(Exception):
    pass


class FakePynvml:
    """The part of pynvml's API the adapter uses. GPU 1 cannot report its power; a MIG device has no utilisation."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, init_error: Exception | None = None) -> None:
        self.init_error = init_error
        self.init_calls = 0
        self.devices = [
            {"uuid": UUIDS[0], "util": 87, "used": 40 * 1024**3, "total": 80 * 1024**3, "power": 312_500, "temp": 61},
            {"uuid": UUIDS[1], "util": 3, "used": 512 * 1024**2, "total": 80 * 1024**3, "power": None, "temp": 35},
        ]
        self.mig = {"uuid": MIG_UUID, "util": NotImplemented, "used": 1024**3, "total": 10 * 1024**3,
                    "power": None, "temp": 40}

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int):
        if not 0 <= index < len(self.devices):
            raise NVMLError("Invalid Argument")
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for device in [*self.devices, self.mig]:
            if device["uuid"] == uuid:
                return device
        raise NVMLError("Not Found")

    def nvmlDeviceGetUUID(self, handle) -> bytes:
        return handle["uuid"].encode()  # older bindings return bytes

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle["util"] is NotImplemented:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=handle["util"], memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=handle["used"], total=handle["total"], free=handle["total"] - handle["used"])

    def nvmlDeviceGetPowerUsage(self, handle) -> int:
        if handle["power"] is None:
            raise NVMLError("Not Supported")
        return handle["power"]

    def nvmlDeviceGetTemperature(self, handle, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return handle["temp"]


class ListWriter:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)


def sample(cuda_visible_devices, fake=None, gpus_expected=True) -> list[dict]:
    writer = ListWriter()
    sampler = GpuSampler(writer, interval_s=3600, nvml=Nvml(fake or FakePynvml()),
                         cuda_visible_devices=cuda_visible_devices, clock=lambda: 123.0, gpus_expected=gpus_expected)
    sampler.start()
    sampler.stop()  # the first sample is taken at once; stop waits for the thread
    return writer.records


GPU0 = {"k": "gpu", "t": 123.0, "uuid": UUIDS[0], "util": 87, "mem_used": 40960.0, "mem_total": 81920.0,
        "power": 312.5, "temp": 61}
GPU1 = {"k": "gpu", "t": 123.0, "uuid": UUIDS[1], "util": 3, "mem_used": 512.0, "mem_total": 81920.0,
        "power": None, "temp": 35}


def test_all_gpus_when_cuda_visible_devices_is_unset() -> None:
    assert sample(None) == [{**GPU0, "gpu": 0}, {**GPU1, "gpu": 1}]


@pytest.mark.parametrize("visible", ["1", UUIDS[1], " 1 ", UUIDS[1][:12]])
def test_one_visible_gpu_by_index_uuid_or_uuid_prefix(visible: str) -> None:
    # the job's cuda:0 is the node's GPU 1; its power query fails -> null, not an exception
    assert sample(visible) == [{**GPU1, "gpu": 0}]


def test_order_and_unmappable_entries() -> None:
    visible = f"1,7,GPU-ffff,MIG-GPU-{UUIDS[0][4:]}/1/0,{UUIDS[0]},0"
    records = sample(visible)
    # position in CUDA_VISIBLE_DEVICES is kept; 7, the unknown UUID and the old MIG form are skipped; no duplicates
    assert records == [{**GPU1, "gpu": 0}, {**GPU0, "gpu": 4}]


def test_mig_device_by_uuid_reports_what_it_can() -> None:
    (record,) = sample(MIG_UUID)
    assert record == {"k": "gpu", "t": 123.0, "gpu": 0, "uuid": MIG_UUID, "util": None, "mem_used": 1024.0,
                      "mem_total": 10240.0, "power": None, "temp": 40}


@pytest.mark.parametrize("visible", ["", "NoDevFiles", "-1"])
def test_no_visible_gpu_no_records(visible: str) -> None:
    assert sample(visible) == []


def test_no_nvml_one_info_line_and_no_records(capsys: pytest.CaptureFixture) -> None:
    fake = FakePynvml(init_error=NVMLError("NVML Shared Library Not Found"))
    assert sample(None, fake) == []
    assert fake.init_calls == 1
    err = capsys.readouterr().err
    assert err == "slurmml: no NVML (nvmlInit failed: NVML Shared Library Not Found): GPU sampling off\n"


def test_no_nvml_in_a_job_without_gpus_says_nothing(capsys: pytest.CaptureFixture) -> None:
    fake = FakePynvml(init_error=NVMLError("NVML Shared Library Not Found"))
    assert sample(None, fake, gpus_expected=False) == []
    assert capsys.readouterr().err == ""


# Environments recorded in jobs on the dev cluster (`env` in `sbatch --wrap`), trimmed to what matters.
GPU_JOB = {"SLURM_JOB_ID": "12", "SLURM_JOB_PARTITION": "gpu", "CUDA_VISIBLE_DEVICES": "0", "GPU_DEVICE_ORDINAL": "0",
           "SLURM_GPUS_ON_NODE": "1", "SLURM_GPUS_PER_NODE": "1", "SLURM_JOB_GPUS": "0"}
CPU_JOB = {"SLURM_JOB_ID": "13", "SLURM_JOB_PARTITION": "gpu"}


@pytest.mark.parametrize("environ, given", [
    (GPU_JOB, True),
    (CPU_JOB, False),
    ({**CPU_JOB, "CUDA_VISIBLE_DEVICES": "0,1"}, False),  # inherited from the submitting shell: not an allocation
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "0"}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_GPUS": "2,3"}, True),  # a job step of a job that has GPUs
    ({}, False),  # a local run that names no GPU
    ({"CUDA_VISIBLE_DEVICES": "1"}, True),
    ({"CUDA_VISIBLE_DEVICES": ""}, False),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, False),
])
def test_gpus_given_by_the_allocation_or_outside_slurm_by_cuda_visible_devices(environ, given) -> None:
    assert gpus_given(environ) is given


def test_without_pynvml_installed(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    writer = ListWriter()
    sampler = GpuSampler(writer, interval_s=0.01, cuda_visible_devices=None, gpus_expected=True)
    sampler.start()
    sampler.stop()
    assert writer.records == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("slurmml: no NVML (pynvml not installed") \
        and lines[0].endswith("GPU sampling off")


def test_sampler_keeps_sampling_every_interval() -> None:
    writer = ListWriter()
    times = iter(range(1000))
    sampler = GpuSampler(writer, interval_s=0.01, nvml=Nvml(FakePynvml()), cuda_visible_devices="0",
                         clock=lambda: float(next(times)))
    sampler.start()
    deadline = time.monotonic() + 10
    while len(writer.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert len(writer.records) >= 3
    assert [r["t"] for r in writer.records[:3]] == [0.0, 1.0, 2.0]


def test_adapter_lazy_init_and_none_values() -> None:
    fake = FakePynvml()
    nvml = Nvml(fake)
    assert fake.init_calls == 0  # nothing happens until used
    assert visible_gpus(nvml, "0")[0].uuid == UUIDS[0]
    assert visible_gpus(nvml, "1")[0].uuid == UUIDS[1]
    assert fake.init_calls == 1
    assert nvml.power(fake.devices[1]) is None
    assert nvml.utilization({"uuid": "gone"}) is None  # a query that blows up -> None


def test_a_failing_sample_is_reported_once_and_sampling_goes_on(capsys: pytest.CaptureFixture) -> None:
    class FlakyWriter(ListWriter):
        calls = 0

        def write(self, record: dict) -> None:
            self.calls += 1
            if self.calls <= 3:
                raise RuntimeError("disk hiccup")
            super().write(record)

    writer = FlakyWriter()
    sampler = GpuSampler(writer, interval_s=0.01, nvml=Nvml(FakePynvml()), cuda_visible_devices="0")
    sampler.start()
    deadline = time.monotonic() + 10
    while not writer.records and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert writer.records
    assert capsys.readouterr().err.count("GPU sampling failed (RuntimeError: disk hiccup)") == 1
