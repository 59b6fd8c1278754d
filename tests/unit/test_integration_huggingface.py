"""slurmml.integrations.huggingface with the real transformers Trainer, on a tiny BERT built from a config
(nothing downloaded).

Each training runs in a Python process of its own (signal handlers and slurmml's current run belong to a
process), as a plain script outside Slurm: its run is a local run under $SLURMML_HOME/runs, whose spool the test
reads back. The real requeue needs a Slurm job; here slurmml says "not a Slurm job" and training goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_A_SLURM_JOB = "slurmml: not a Slurm job: nothing to requeue"

SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
    from slurmml.integrations.huggingface import SlurmmlCallback, resume_checkpoint

    OUTPUT = sys.argv[1]
    SIGNAL_AT = int(os.environ.get("SIGNAL_AT", "-1"))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            generator = torch.Generator().manual_seed(i)
            return {"input_ids": torch.randint(0, 50, (8,), generator=generator), "labels": torch.tensor(i % 2)}

    class Signal(TrainerCallback):  # before SlurmmlCallback: its step end sees the signal of the same step
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == SIGNAL_AT:
                signal.raise_signal(signal.SIGUSR2)  # handled before this call returns, as a signal from Slurm

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50,
        max_position_embeddings=16))
    args = TrainingArguments(
        output_dir=OUTPUT, max_steps=int(os.environ.get("MAX_STEPS", "6")), logging_steps=1, save_steps=4,
        per_device_train_batch_size=4, learning_rate=1e-3, report_to="none", use_cpu=True, disable_tqdm=True,
        hub_token="hf_notarealtoken")
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[Signal(), SlurmmlCallback()])
    trainer.train(resume_from_checkpoint=resume_checkpoint(OUTPUT))
    print("steps:", trainer.state.global_step)
''')


def train(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SLURMML_"))}
    environ.update(SLURMML_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", **env)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "output")], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def spool(tmp_path: Path) -> list[dict]:
    (path,) = (tmp_path / "home" / "runs").glob("local-*/spool.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric_steps(records: list[dict], name: str) -> list[int]:
    return [r["s"] for r in records if r["k"] == "m" and name in r["v"]]


def test_callback_records_arguments_logs_and_checkpoints(tmp_path: Path) -> None:
    done = train(tmp_path)
    assert done.returncode == 0, done.stderr
    records = spool(tmp_path)
    (params,) = [r["v"] for r in records if r["k"] == "p"]
    assert params["training_args"]["learning_rate"] == 1e-3
    assert params["training_args"]["hub_token"] == "***"  # masked by slurmml, not only hidden by transformers
    assert params["model_config"]["hidden_size"] == 16
    assert metric_steps(records, "loss") == [1, 2, 3, 4, 5, 6]  # the Trainer's global_step after the step
    assert metric_steps(records, "train_runtime") == [6]
    artifacts = [(r["name"], r["path"]) for r in records if r["k"] == "a"]
    output = tmp_path / "output"
    assert artifacts == [(f"checkpoint-{n}", str(output / f"checkpoint-{n}")) for n in (4, 6)]
    assert all(r["size"] > 0 for r in records if r["k"] == "a")
    assert [r["state"] for r in records if r["k"] == "end"] == ["COMPLETED"]


def test_warning_signal_saves_its_step_and_training_goes_on_outside_slurm(tmp_path: Path) -> None:
    done = train(tmp_path, SIGNAL_AT="2")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count(NOT_A_SLURM_JOB) == 1
    assert "steps: 6" in done.stdout  # not requeued: trained on to max_steps
    output = tmp_path / "output"
    assert (output / "checkpoint-2" / "trainer_state.json").is_file()  # saved at the step the signal came
    assert json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    records = spool(tmp_path)
    assert [r["name"] for r in records if r["k"] == "a"] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not [r for r in records if r["k"] in ("requeue", "requeue_refused")]
    assert metric_steps(records, "loss") == [1, 2, 3, 4, 5, 6]


def test_training_resumes_from_the_newest_checkpoint_and_says_so(tmp_path: Path) -> None:
    first = train(tmp_path, MAX_STEPS="4")
    assert first.returncode == 0, first.stderr
    second = train(tmp_path, MAX_STEPS="6")  # a second local run: one spool per run
    assert second.returncode == 0, second.stderr
    assert "steps: 6" in second.stdout
    (later,) = [run for run in (tmp_path / "home" / "runs").glob("local-*") if
                any('"resume"' in text for text in (run / "spool.jsonl").read_text().splitlines())]
    records = [json.loads(text) for text in (later / "spool.jsonl").read_text().splitlines()]
    (resume,) = [r for r in records if r["k"] == "resume"]
    assert resume == {**resume, "step": 4, "checkpoint": str(tmp_path / "output" / "checkpoint-4")}
    assert metric_steps(records, "loss") == [5, 6]


def test_resume_checkpoint_takes_the_newest_complete_folder(tmp_path: Path) -> None:
    from slurmml.integrations.huggingface import resume_checkpoint

    assert resume_checkpoint(tmp_path / "missing") is None
    for name, complete in (("checkpoint-2", True), ("checkpoint-10", True), ("checkpoint-12", False),
                           ("checkpoint-x", True), ("checkpoint-99.tmp", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-12" / "model.safetensors").write_bytes(b"cut short")
    assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step, not by name


def test_missing_transformers_is_one_line_naming_the_extra() -> None:
    code = "import sys; sys.modules['transformers'] = None; import slurmml.integrations.huggingface"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == ("ImportError: slurmml.integrations.huggingface needs transformers, which "
                                            "is not installed: pip install \"slurmml[huggingface]\"")
