"""A real S3-compatible server on 127.0.0.1 for development and tests: moto's standalone server, with auth on.

moto answers the S3 HTTP API (multipart, conditional puts, pagination) but keeps objects in memory: its contents
go when it stops. It checks signatures only once IAM is in use, so `provision` creates a user, a key and an admin
policy in the first INITIAL_NO_AUTH_ACTION_COUNT requests; after those every request needs that key, and wrong
credentials are refused as a real store refuses them. `slurmml cluster up` starts one on DEV_PORT and writes the
key to the `slurmml-dev` profile of ~/.aws (boto3's standard chain); tests start their own on free ports.
"""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HOST = "127.0.0.1"
DEV_PORT = 9000
DEV_BUCKET = "slurmml-dev"
DEV_PROFILE = "slurmml-dev"
PROVISIONING_REQUESTS = 3  # create_user, create_access_key, put_user_policy: then auth is enforced
_ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int

    def environment(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """What makes slurmml (and boto3) in a process or a job use this server and bucket."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {"SLURMML_STORAGE": url, "SLURMML_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def answering(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def start(port: int, log_path: Path, buckets: tuple[str, ...] = ()) -> S3Server:
    """Start moto's server on 127.0.0.1:`port` (detached, in its own session), provision a key, create `buckets`."""
    if answering(port):
        raise RuntimeError(f"port {port} on {HOST} is taken")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(PROVISIONING_REQUESTS))
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environment,
                                   start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answering(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the S3 server did not start on {HOST}:{port}; see {log_path}")
        time.sleep(0.1)
    endpoint = f"http://{HOST}:{port}"
    try:
        access_key, secret_key = provision(endpoint)
        server = S3Server(endpoint, access_key, secret_key, process.pid)
        for bucket in buckets:
            create_bucket(server, bucket)
    except Exception:
        stop(process.pid)
        raise
    return server


def provision(endpoint: str) -> tuple[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="provisioning",
                       aws_secret_access_key="provisioning")
    iam.create_user(UserName="slurmml")
    key = iam.create_access_key(UserName="slurmml")["AccessKey"]
    iam.put_user_policy(UserName="slurmml", PolicyName="everything", PolicyDocument=_ALLOW_ALL)
    return key["AccessKeyId"], key["SecretAccessKey"]


def create_bucket(server: S3Server, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key).create_bucket(Bucket=bucket)


def stop(pid: int, timeout_s: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child: reap it, or it stays a zombie that kill(0) still finds
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- the dev cluster's server


def _state_dir() -> Path:
    return Path(os.environ.get("SLURMML_DEVCLUSTER_STATE") or "/var/lib/slurmml-devcluster")


def _pid_file() -> Path:
    return _state_dir() / "s3.pid"


def _running_pid() -> Optional[int]:
    try:
        pid = int(_pid_file().read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if answering(DEV_PORT) else None


def write_profile(server: S3Server, profile: str = DEV_PROFILE, aws_dir: Optional[Path] = None) -> Path:
    """The key as a profile of ~/.aws (boto3's standard chain), with the endpoint in the profile's config."""
    folder = aws_dir or Path.home() / ".aws"
    folder.mkdir(mode=0o700, exist_ok=True)
    credentials, config = configparser.ConfigParser(), configparser.ConfigParser()
    credentials.read(folder / "credentials")
    config.read(folder / "config")
    credentials[profile] = {"aws_access_key_id": server.access_key, "aws_secret_access_key": server.secret_key}
    config[f"profile {profile}"] = {"region": "us-east-1", "endpoint_url": server.endpoint}
    for name, parser in (("credentials", credentials), ("config", config)):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            parser.write(handle)
    return folder


def up() -> int:
    if _running_pid():
        print(f"devcluster: S3 server already up at http://{HOST}:{DEV_PORT} (bucket {DEV_BUCKET}, "
              f"profile {DEV_PROFILE})")
        return 0
    try:
        server = start(DEV_PORT, _state_dir() / "log" / "s3.log", buckets=(DEV_BUCKET,))
    except Exception as error:  # one line: the cluster itself is up, the store is not
        print(f"devcluster: error: S3 server: {error}", file=sys.stderr)
        return 1
    _pid_file().write_text(f"{server.pid}\n")
    write_profile(server)
    print(f"devcluster: S3 server up at {server.endpoint}: bucket {DEV_BUCKET}, credentials in profile "
          f"{DEV_PROFILE} of ~/.aws (AWS_PROFILE={DEV_PROFILE}); it keeps objects in memory until `down`")
    return 0


def down() -> int:
    pid = _running_pid()
    if pid:
        stop(pid)
        print("devcluster: S3 server stopped")
    _pid_file().unlink(missing_ok=True)
    return 0


def status() -> int:
    pid = _running_pid()
    print(f"devcluster: S3 server {'up at http://%s:%d (pid %d)' % (HOST, DEV_PORT, pid) if pid else 'down'}")
    return 0 if pid else 1
