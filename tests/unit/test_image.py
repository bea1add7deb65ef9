"""build / push against a fake Docker Engine API: the real SDK, over HTTP, no Docker needed."""

import base64
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.stub import Stubber

from batchspot.image import ImageError, build, engine, push, revision_tag

ECR_URL = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot"
DIGEST = "sha256:" + "f" * 64


class FakeEngine(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, str, dict, dict]]
    images: set[str]
    build_lines: list[dict]
    push_digest: str | None

    def _reply(self, status: int, payload) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, lines: list[dict]) -> None:
        # The Engine streams progress as chunked JSON lines; the SDK relies on the chunking.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = json.dumps(line).encode() + b"\r\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.split("/", 2)[-1] if url.path.startswith("/v1.") else url.path.lstrip("/")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") == "chunked":
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                self.rfile.read(size + 2)
            self.rfile.readline()
        elif length:
            self.rfile.read(length)
        self.requests.append((method, path, query, dict(self.headers)))
        if path == "version":
            self._reply(200, {"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "27.0"})
        elif path == "_ping":
            self._reply(200, b"OK")
        elif path == "build":
            self.images.add(query["t"])
            self._stream(self.build_lines)
        elif path == "auth":
            self._reply(200, {"Status": "Login Succeeded"})
        elif path.startswith("images/") and path.endswith("/tag"):
            source = path[len("images/") : -len("/tag")]
            if source not in self.images:
                self._reply(404, {"message": f"No such image: {source}"})
                return
            self.images.add(f"{query['repo']}:{query['tag']}")
            self._reply(201, b"")
        elif path.startswith("images/") and path.endswith("/push"):
            aux = {"Tag": query["tag"], "Size": 1}
            if self.push_digest:
                aux["Digest"] = self.push_digest
            self._stream([{"status": "Pushing", "id": "abc"}, {"aux": aux}])
        else:
            self._reply(404, {"message": f"unexpected {method} {path}"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch):
    handler = type(
        "Engine",
        (FakeEngine,),
        {
            "requests": [],
            "images": set(),
            "build_lines": [{"stream": "Step 1/1 : FROM python\n"}, {"aux": {"ID": "sha256:1"}}],
            "push_digest": DIGEST,
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_port}")
    yield handler
    server.shutdown()


@pytest.fixture
def context(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "Dockerfile"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return tmp_path


@pytest.fixture
def ecr():
    client = boto3.client(
        "ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    token = base64.b64encode(b"AWS:secret-password").decode()
    with Stubber(client) as stub:
        stub.add_response(
            "get_authorization_token",
            {
                "authorizationData": [
                    {
                        "authorizationToken": token,
                        "proxyEndpoint": f"https://{ECR_URL.split('/')[0]}",
                    }
                ]
            },
        )
        yield client


def test_unreachable_engine_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(ImageError, match=r"^No Docker engine is reachable at tcp://127\.0\.0\.1:9"):
        engine()


def test_tag_is_the_git_revision_and_a_dirty_tree_says_so(context):
    clean = revision_tag(context)
    head = subprocess.run(
        ["git", "-C", str(context), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert clean == head
    (context / "Dockerfile").write_text("FROM python:3.12-slim\n")
    assert revision_tag(context).startswith(f"{head}-dirty-")


def test_revision_of_a_tree_without_commits_is_a_clear_error(tmp_path):
    subprocess.run(["git", "-C", str(tmp_path), "init", "-q"], check=True)
    with pytest.raises(ImageError, match="git revision"):
        revision_tag(tmp_path)


def test_build_then_push_sends_the_revision_tag_with_ecr_credentials(fake_engine, context, ecr):
    tag = revision_tag(context)
    lines: list[str] = []
    image = build(engine(), context, tag=tag, emit=lines.append)
    pushed = push(engine(), ecr, repository_url=ECR_URL, tag=tag, emit=lines.append)

    assert image == f"batchspot-worker:{tag}"
    assert pushed.image == f"{ECR_URL}:{tag}"
    assert "Step 1/1 : FROM python" in lines
    build_request = next(r for r in fake_engine.requests if r[1] == "build")
    assert build_request[2]["t"] == image and build_request[2]["platform"] == "linux/amd64"
    (push_request,) = [r for r in fake_engine.requests if r[1].endswith("/push")]
    auth = json.loads(base64.urlsafe_b64decode(push_request[3]["X-Registry-Auth"]))
    assert (auth["username"], auth["password"]) == ("AWS", "secret-password")


def test_push_moves_no_other_tag_and_pins_the_reported_digest(fake_engine, context, ecr):
    tag = revision_tag(context)
    build(engine(), context, tag=tag, emit=lambda _: None)
    pushed = push(engine(), ecr, repository_url=ECR_URL, tag=tag, emit=lambda _: None)

    pushed_tags = [r[2]["tag"] for r in fake_engine.requests if r[1].endswith("/push")]
    assert pushed_tags == [tag], "an immutable repository refuses a moved tag such as latest"
    assert pushed.pinned == f"{ECR_URL}@{DIGEST}"
    assert pushed.deploy_variable == f"image_digest={DIGEST}"


def test_push_without_a_digest_from_the_registry_is_a_clear_error(fake_engine, context, ecr):
    fake_engine.push_digest = None
    tag = revision_tag(context)
    build(engine(), context, tag=tag, emit=lambda _: None)
    with pytest.raises(ImageError, match=r"no digest .* cannot be pinned"):
        push(engine(), ecr, repository_url=ECR_URL, tag=tag, emit=lambda _: None)


def test_build_error_from_the_engine_is_raised(fake_engine, context):
    fake_engine.build_lines = [{"error": "failed to solve: no such file", "errorDetail": {}}]
    with pytest.raises(ImageError, match="failed to solve"):
        build(engine(), context, tag="t", emit=lambda _: None)


def test_push_before_build_says_to_build_first(fake_engine, ecr):
    with pytest.raises(ImageError, match="invoke build"):
        push(engine(), ecr, repository_url=ECR_URL, tag="nope", emit=lambda _: None)
