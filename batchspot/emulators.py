"""Local AWS emulators on 127.0.0.1, started by the tests and by ``invoke local``.

moto's server hosts the whole stack (IAM, Batch, ECR, SQS, S3, S3 Select for ``SELECT *``), so
it is the default. Each emulator runs as a child process and is reached over HTTP exactly as
the worker reaches AWS, through boto3's own ``AWS_ENDPOINT_URL``. :func:`emulator_at` is the one
place that decides between an emulator already running at an endpoint and one started here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config

LOOPBACK = "127.0.0.1"
STARTUP_SECONDS = 60.0

# Credentials and region for talking to an emulator; real AWS never sees them.
EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
EmulatorKind = Literal["moto", "localstack"]
# What BatchSpot uses of a LocalStack: a running one without these is misconfigured.
LOCALSTACK_NEEDS = ("sqs", "s3")


class EmulatorError(RuntimeError):
    """An emulator could not be started or did not become ready."""


@dataclass(frozen=True)
class Emulator:
    """A running emulator: where it listens and the environment that points boto3 at it."""

    name: str
    endpoint: str

    def client_env(self) -> dict[str, str]:
        """Environment variables that route every boto3 client to this emulator.

        ``AWS_EC2_METADATA_DISABLED`` stops botocore from probing 169.254.169.254 for
        credentials or region, which stalls for seconds off EC2 and could reach a real
        instance role on it.
        """
        return {
            **EMULATOR_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str, config: Config | None = None) -> Any:
        """Return a boto3 client on this emulator with its test credentials (never ~/.aws)."""
        session = boto3.session.Session(
            aws_access_key_id=EMULATOR_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_ENV["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=EMULATOR_ENV["AWS_SESSION_TOKEN"],
            region_name=EMULATOR_ENV["AWS_DEFAULT_REGION"],
        )
        return session.client(service, endpoint_url=self.endpoint, config=config)


def running_emulator(endpoint: str) -> Emulator | None:
    """Return the emulator answering at ``endpoint``, or None if nothing answers there.

    LocalStack is told from moto by its health path, which moto does not serve. A LocalStack
    without SQS or S3 raises :class:`EmulatorError`: using it would fail later and obscurely,
    and starting another instead would hide a misconfigured docker-compose file.
    """
    endpoint = endpoint.rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as response:
            services = json.load(response).get("services", {})
    except urllib.error.HTTPError:
        return Emulator("moto", endpoint)  # it answered, but not as LocalStack does
    except (OSError, ValueError):
        return None
    missing = [s for s in LOCALSTACK_NEEDS if services.get(s) not in ("available", "running")]
    if missing:
        raise EmulatorError(
            f"the LocalStack at {endpoint} does not offer {', '.join(missing)}; "
            "start it with SERVICES=sqs,s3,sts,cloudwatch or stop it so a native one can be started"
        )
    return Emulator("localstack", endpoint)


@contextlib.contextmanager
def emulator_at(
    endpoint: str | None,
    log_dir: Path,
    kind: EmulatorKind = "moto",
    *,
    start_if_absent: bool = False,
    batch_containers: bool = False,
) -> Iterator[Emulator]:
    """Use the emulator at ``endpoint`` (it outlives the block), else start ``kind`` for it.

    An ``endpoint`` where nothing answers is an error, unless ``start_if_absent`` says it was
    only a guess (``invoke test-local`` tries docker-compose's port first).
    ``batch_containers`` starts moto with Batch jobs run as containers (:func:`moto_server`).
    """
    if endpoint:
        if running := running_emulator(endpoint):
            yield running
            return
        if not start_if_absent:
            raise EmulatorError(f"no AWS emulator answers at {endpoint}")
    if kind == "localstack":
        with localstack_server(log_dir) as started:
            yield started
        return
    with moto_server(log_dir, batch_containers=batch_containers) as started:
        yield started


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers; fail with the emulator's own log if it dies first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(
                f"emulator exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if not with 200
        except OSError:
            time.sleep(0.1)
    raise EmulatorError(f"emulator at {url} not ready after {STARTUP_SECONDS:.0f} s")


@contextlib.contextmanager
def moto_server(
    log_dir: Path,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    *,
    batch_containers: bool = False,
) -> Iterator[Emulator]:
    """Run moto's server on loopback for the duration of the block.

    ``MOTO_IAM_LOAD_MANAGED_POLICIES`` lets the Terraform stack attach AWS managed policies
    such as AmazonEC2ContainerServiceforEC2Role. Batch runs jobs without Docker (they succeed at
    once) unless ``batch_containers``: then it runs every job as a container of its job
    definition's image on the Docker engine, on the host's network so that the containers
    reach this server on 127.0.0.1. ``extra_env`` adds moto settings for one server, such as
    ``INITIAL_NO_AUTH_ACTION_COUNT`` to enforce IAM.
    """
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"moto-{port}.log"
    env = {
        **os.environ,
        **EMULATOR_ENV,
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
        **({"MOTO_DOCKER_NETWORK_MODE": "host"} if batch_containers else {}),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        wait_until_ready(f"{endpoint}/moto-api/", process, log)
        request = urllib.request.Request(
            f"{endpoint}/moto-api/config",
            data=json.dumps({"batch": {"use_docker": batch_containers}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        yield Emulator("moto", endpoint)
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a child started in its own session, and everything it started."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- LocalStack, run natively ---------------------------------------------------------------
#
# LocalStack's free edition serves SQS and S3 several times faster than moto but has no S3
# Select, Batch or ECR. Its CLI insists on Docker and an auth token, so the runtime is started
# directly. It pins its own boto3, so it lives in a venv of its own under the cache directory,
# never in the project's.

LOCALSTACK_VERSION = "4.13.1"  # the last line that runs on Python 3.11; 2026.x needs 3.13
LOCALSTACK_REQUIREMENTS = (
    f"localstack-core[runtime]=={LOCALSTACK_VERSION}",
    "cbor2<6",  # cbor2 6 dropped an API LocalStack's serializer imports
    "service-identity",  # otherwise Twisted's TLS stack warns and falls back on every start
)
INSTALL_MINUTES = 15


@dataclass(frozen=True)
class LocalStackInstall:
    """A ready LocalStack venv and the TLS certificate handed to it."""

    python: Path
    cert: Path


def cache_dir() -> Path:
    """Where BatchSpot keeps tools it installs for itself (``$BATCHSPOT_CACHE`` overrides)."""
    if override := os.environ.get("BATCHSPOT_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batchspot"


def ensure_localstack_venv() -> LocalStackInstall:
    """Create LocalStack's own venv and certificate unless a complete one is already cached.

    A stamp naming the exact requirements is written last, so an interrupted install is
    redone rather than trusted; a file lock lets parallel test runs share one install.
    """
    root = cache_dir() / f"localstack-{LOCALSTACK_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    install = LocalStackInstall(python=root / "venv" / "bin" / "python", cert=root / "server.pem")
    stamp = root / "installed.txt"
    wanted = "\n".join(LOCALSTACK_REQUIREMENTS)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted and install.python.exists()):
            log = root / "install.log"
            _run_logged([sys.executable, "-m", "venv", "--clear", str(root / "venv")], log)
            pip = [str(install.python), "-m", "pip", "install", "--disable-pip-version-check"]
            _run_logged([*pip, "--quiet", *LOCALSTACK_REQUIREMENTS], log)
            stamp.write_text(wanted)
        if not install.cert.exists():
            _make_certificate(install.cert)
    return install


def _run_logged(command: list[str], log: Path) -> None:
    """Run an install step, keeping its output for the error message if it fails."""
    with log.open("ab") as sink:
        try:
            result = subprocess.run(
                command, stdout=sink, stderr=subprocess.STDOUT, timeout=INSTALL_MINUTES * 60
            )
        except subprocess.TimeoutExpired:
            raise EmulatorError(
                f"installing LocalStack took over {INSTALL_MINUTES} minutes; see {log}"
            ) from None
    if result.returncode != 0:
        raise EmulatorError(
            f"installing LocalStack failed ({' '.join(command[:4])} ... exited "
            f"{result.returncode}); is the package index reachable? "
            f"End of {log}:\n{log.read_text()[-2000:]}"
        )


def _make_certificate(pem: Path) -> None:
    """Write a self-signed key + certificate for 127.0.0.1 to ``pem`` (one combined file).

    LocalStack's own certificate code breaks on current pyOpenSSL; given
    ``CUSTOM_SSL_CERT_PATH`` it skips that code. The gateway serves plain HTTP as well, which
    is what BatchSpot uses, so the certificate only has to exist and be valid.
    """
    key, crt = pem.with_suffix(".key"), pem.with_suffix(".crt")
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", str(key), "-out", str(crt),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise EmulatorError("openssl is not installed; LocalStack needs a certificate") from None
    if result.returncode != 0:
        raise EmulatorError(f"openssl could not make a certificate: {result.stderr.strip()}")
    pem.write_text(key.read_text() + crt.read_text())


@contextlib.contextmanager
def localstack_server(log_dir: Path, port: int | None = None) -> Iterator[Emulator]:
    """Run LocalStack (SQS and S3 only) natively on loopback for the duration of the block.

    Installs LocalStack's venv on first use. Its state lives in a temporary directory that is
    removed afterwards, so every run starts empty, as moto does.
    """
    install = ensure_localstack_venv()
    port = port or free_port()
    with socket.socket() as probe:  # LocalStack hangs, rather than exits, on a taken port
        if probe.connect_ex((LOOPBACK, port)) == 0:
            raise EmulatorError(f"cannot start LocalStack: {LOOPBACK}:{port} is already in use")
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"localstack-{port}.log"
    endpoint = f"http://{LOOPBACK}:{port}"
    with tempfile.TemporaryDirectory(prefix="localstack-") as state:
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
            **EMULATOR_ENV,
            "GATEWAY_LISTEN": f"{LOOPBACK}:{port}",
            "LOCALSTACK_HOST": f"{LOOPBACK}:{port}",
            # sts and cloudwatch: `invoke local` applies the queue and storage modules here, and
            # Terraform asks STS who it is; the queue module carries a CloudWatch alarm.
            "SERVICES": "sqs,s3,sts,cloudwatch",
            "EAGER_SERVICE_LOADING": "1",
            "OVERRIDE_IN_DOCKER": "0",  # it would otherwise guess "in Docker" from /proc here
            "FILESYSTEM_ROOT": state,
            "DNS_ADDRESS": "0",  # no DNS server: it would want port 53
            # Queue URLs as http://host:port/<account>/<name>: no subdomains to resolve, and the
            # form the Terraform provider accepts (it rejects the "path" strategy's /queue/...).
            "SQS_ENDPOINT_STRATEGY": "off",
            "CUSTOM_SSL_CERT_PATH": str(install.cert),
            "DISABLE_EVENTS": "1",  # no analytics calls home
        }
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(install.python), "-m", "localstack.runtime.main"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=state,
                start_new_session=True,
            )
        try:
            try:
                wait_until_ready(f"{endpoint}/_localstack/health", process, log)
            except EmulatorError:
                code = process.poll()
                what = f"exited with code {code}" if code is not None else "was not ready in time"
                raise EmulatorError(
                    f"LocalStack {what} on {endpoint}; end of {log}:\n{log.read_text()[-2000:]}"
                ) from None
            yield Emulator("localstack", endpoint)
        finally:
            stop_process_group(process)
