"""What counts as secret, on both sides of the line, and masking of configs, environments and command lines."""

from __future__ import annotations

import pytest

from slurmml.tracking.secrets import (
    MASK, looks_secret, mask_argv, mask_config, mask_environment, mask_overrides, mask_text, words,
)


@pytest.mark.parametrize("name", [
    "api_key", "API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "hfToken", "HF_TOKEN", "db.password",
    "wandb-api-key", "APIKey", "apikey", "github_token", "access_token", "secret", "client_secret", "PASSWD",
    "dbPassword", "mysqlpassword", "credentials", "GOOGLE_APPLICATION_CREDENTIALS", "auth", "basic_auth",
    "Authorization", "private_key", "ssh.privateKey", "key", "token", "openai.api_key", "secrets",
    "AUTH_TOKEN", "passphrase", "aws_session_token",
])
def test_secret_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", [
    "keyboard", "monkey", "tokenizer", "max_tokens", "max_new_tokens", "num_keys", "tokens_per_batch",
    "author", "lr", "batch_size", "model.name", "pad_token", "eos_token_id", "token_type_ids", "key_dim",
    "num_key_value_heads", "metric_key", "monitor", "PWD", "HOME", "SLURM_JOB_ID", "tokenizer_name",
    "keys", "vocab_size", "hidden_dim", "optimizer.weight_decay", "authors", "privacy", "PATH",
])
def test_not_secret_names(name: str) -> None:
    assert not looks_secret(name)


def test_words_split_on_separators_and_camel_case() -> None:
    assert words("AWS_SECRET_ACCESS_KEY") == ["aws", "secret", "access", "key"]
    assert words("hfToken") == ["hf", "token"]
    assert words("db.password-v2") == ["db", "password", "v", "2"]
    assert words("APIKey") == ["api", "key"]


def test_mask_config_is_a_deep_masked_copy() -> None:
    config = {
        "model": {"name": "gpt", "max_tokens": 512, "api_key": "sk-123"},
        "db": {"password": "hunter2", "url": "postgres://me:hunter2@db:5432/x", "user": "me"},
        "credentials": {"user": "u", "token": "t"},
        "hooks": [{"hf_token": "hf_abc", "lr": 0.1}, "plain", ("x", 1)],
        "empty_token": None,
        "blank_secret": "",
        3: "int key kept",
    }
    masked = mask_config(config)
    assert masked == {
        "model": {"name": "gpt", "max_tokens": 512, "api_key": MASK},
        "db": {"password": MASK, "url": f"postgres://me:{MASK}@db:5432/x", "user": "me"},
        "credentials": MASK,
        "hooks": [{"hf_token": MASK, "lr": 0.1}, "plain", ["x", 1]],
        "empty_token": None,
        "blank_secret": "",
        3: "int key kept",
    }
    assert config["model"]["api_key"] == "sk-123" and config["db"]["password"] == "hunter2"  # input untouched
    masked["hooks"][0]["lr"] = 1.0
    assert config["hooks"][0]["lr"] == 0.1  # a copy, not a view


def test_mask_config_accepts_omegaconf() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    conf = omegaconf.OmegaConf.create({"a": {"secret_key": "x", "n": [1, {"password": "p"}]}})
    assert mask_config(conf) == {"a": {"secret_key": MASK, "n": [1, {"password": MASK}]}}


def test_mask_environment() -> None:
    env = {"SLURM_JOB_ID": "42", "SLURM_AUTH_TOKEN": "abc", "HF_TOKEN": "hf_x", "PWD": "/home/me",
           "PROXY": "http://u:pw@proxy:3128"}
    assert mask_environment(env) == {"SLURM_JOB_ID": "42", "SLURM_AUTH_TOKEN": MASK, "HF_TOKEN": MASK,
                                     "PWD": "/home/me", "PROXY": f"http://u:{MASK}@proxy:3128"}


def test_mask_overrides_and_argv() -> None:
    assert mask_overrides(["lr=0.1", "+db.password=hunter2", "model.max_tokens=5", "api_key="]) == \
        ["lr=0.1", f"+db.password={MASK}", "model.max_tokens=5", "api_key="]
    argv = ["train.py", "--api-key", "sk-1", "--lr", "0.1", "--token=abc", "hf_token=x", "--verbose", "-m"]
    assert mask_argv(argv) == ["train.py", "--api-key", MASK, "--lr", "0.1", f"--token={MASK}",
                               f"hf_token={MASK}", "--verbose", "-m"]


@pytest.mark.parametrize("override, masked", [
    ("+api_key=x", f"+api_key={MASK}"),
    ("db.password=y", f"db.password={MASK}"),
    ("AWS_SECRET_ACCESS_KEY=z", f"AWS_SECRET_ACCESS_KEY={MASK}"),
    ("++env.AWS_SECRET_ACCESS_KEY=z", f"++env.AWS_SECRET_ACCESS_KEY={MASK}"),
    ("+api_key='sk 1=2'", f"+api_key={MASK}"),  # a quoted value, with a space and an =
    ('hf_token="a,b"', f"hf_token={MASK}"),
    ("+api_key=a,b", f"+api_key={MASK}"),  # a sweep over two keys
    ("api_key=", "api_key="),  # no value: nothing to hide, and "unset" stays visible
    ("~api_key", "~api_key"),
    ("+db={host:h,password:p,port:1}", f"+db={{host:h,password:{MASK},port:1}}"),
    ("+db={cfg:{token:'t,u'},x:[1,2]}", f"+db={{cfg:{{token:{MASK}}},x:[1,2]}}"),
    ("+db={credentials:[a,{b:1}],host:h}", f"+db={{credentials:{MASK},host:h}}"),
    ("db.url=postgres://me:pw@host/db", f"db.url=postgres://me:{MASK}@host/db"),
    ("lr=0.1", "lr=0.1"),
    ("model.max_tokens=5", "model.max_tokens=5"),
    ("+db={host:h,keyboard:k}", "+db={host:h,keyboard:k}"),
    ("hydra/launcher=slurmml_local", "hydra/launcher=slurmml_local"),
    ("tags=[a,b]", "tags=[a,b]"),
])
def test_mask_override_strings(override: str, masked: str) -> None:
    assert mask_overrides([override]) == [masked]
    assert mask_argv(["train.py", "-m", override]) == ["train.py", "-m", masked]


def test_secret_assignments_inside_text_are_masked() -> None:
    # a launcher's setup lines, given on the command line or in its config
    assert mask_overrides(["hydra.launcher.setup=[export HF_TOKEN=hf_x,module load cuda]"]) == \
        [f"hydra.launcher.setup=[export HF_TOKEN={MASK},module load cuda]"]
    assert mask_config({"setup": ["export WANDB_API_KEY='a b'", "echo x=1"], "args": "--api-key=k --lr=0.1"}) == \
        {"setup": [f"export WANDB_API_KEY={MASK}", "echo x=1"], "args": f"--api-key={MASK} --lr=0.1"}
    assert mask_overrides(["hydra.launcher.srun_args=[--export=ALL]", "name=a=b"]) == \
        ["hydra.launcher.srun_args=[--export=ALL]", "name=a=b"]


@pytest.mark.parametrize("text, masked", [
    ("huggingface-cli login --token hf_x", f"huggingface-cli login --token {MASK}"),
    ("mysql --password hunter2 -h db", f"mysql --password {MASK} -h db"),
    ("upload --api-key abc --lr 0.1", f"upload --api-key {MASK} --lr 0.1"),
    ("login --password 'a b' --user me", f"login --password {MASK} --user me"),
    ("login --token --verbose", "login --token --verbose"),  # no value: the next word is an option
    ("train --max-tokens 100 --token-count 5 --keyboard us --lr 0.1",  # not secret names: untouched
     "train --max-tokens 100 --token-count 5 --keyboard us --lr 0.1"),
])
def test_the_word_after_a_secret_option_is_masked_in_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked
    assert mask_overrides([f"hydra.launcher.setup=[{text}]"]) == [f"hydra.launcher.setup=[{masked}]"]
    assert mask_config({"setup": [text]}) == {"setup": [masked]}
