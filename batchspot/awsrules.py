"""The "AWS rules" layer: a loopback HTTP proxy that makes an emulator answer as AWS does.

moto and LocalStack are faithful enough to run the worker, but lenient where AWS is strict,
and they never throttle. Code that only ever met an emulator can then break on AWS in ways no
test saw. This layer sits between boto3 (``AWS_ENDPOINT_URL`` pointing at it, nothing else
changes in the worker) and the emulator: it forwards each request unchanged (method, path and
query, headers with the SigV4 ``Authorization``, body) and answers itself where AWS differs:

* S3 GET/HEAD of a missing key is 403 AccessDenied, not 404, for a caller without
  ``s3:ListBucket`` on the bucket (S3 API Reference, GetObject and HeadObject, "Permissions").
  Applied only when a ``policy`` is given, evaluated by ``batchspot.iam_policy``.
* S3 object keys are at most 1,024 bytes of UTF-8 (S3 User Guide, "Naming Amazon S3
  objects"): PutObject, CopyObject and CreateMultipartUpload with a longer key get 400
  KeyTooLongError.
* S3 user metadata is at most 2 KB, counted as the UTF-8 bytes of each key (without
  ``x-amz-meta-``) and value (S3 User Guide, "Working with object metadata"): PutObject and
  CreateMultipartUpload over that get 400 MetadataTooLarge.
* SQS messages are at most 1 MiB (1,048,576 bytes) since 2025 (SQS Developer Guide, "Amazon
  SQS message quotas"), in bytes, where moto counts characters: a longer SendMessage body gets
  InvalidParameterValue, a SendMessageBatch whose bodies add up to more gets
  BatchRequestTooLong.
* SQS receipt handles go stale when a message is received again (SQS API Reference,
  ReceiveMessage and DeleteMessage); moto accepts every handle a message ever had. Here a
  ChangeMessageVisibility with a stale handle fails with ReceiptHandleIsInvalid, and a
  DeleteMessage with one succeeds without deleting anything, as on AWS.
* ``Faults``: S3 503 SlowDown, SQS RequestThrottled, ChangeMessageVisibilityBatch entries
  failing with InternalError in a 200 answer, and 409 ConditionalRequestConflict for a
  conditional write (PutObject or CompleteMultipartUpload with ``If-None-Match``), which S3
  gives when another operation on the key runs at the same time (S3 API Reference, PutObject
  and CompleteMultipartUpload, ``If-None-Match``); at chosen rates, reproducible from a seed.

Requests are told apart by their signature: SQS's JSON protocol names the operation in
``X-Amz-Target: AmazonSQS.<Operation>``, S3 requests are signed for the service ``s3`` and
addressed path-style (``/bucket/key``; botocore uses path style for an endpoint on an IP
address). Everything else, SQS's query protocol included, passes through untouched.

Known limits, accepted for a test tool: a HEAD on a missing *bucket* reads as 403 too (its
404 has no body to tell it from a missing key); SQS message attributes are not counted in the
message size; a batch the layer splits is re-encoded, so its payload no longer matches the
signature (emulators do not check it); the receipt handles seen are kept for the layer's life.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit
from xml.sax.saxutils import escape

from batchspot.iam_policy import allows

LOOPBACK = "127.0.0.1"
# AWS's documented limits, written out here rather than imported from worker.limits on purpose:
# the layer is the oracle the worker is tested against, so a wrong constant in the worker must
# not silently become the rule it is checked by.
MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
MAX_MESSAGE_BYTES = 1_048_576
UPSTREAM_TIMEOUT = 120.0  # over SQS's 20 s long poll, and a slow 25 MiB transfer
# Headers that describe one connection rather than the request, so are never relayed; the
# layer frames each body itself, and has already answered any "Expect: 100-continue".
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)
# Query parameters a GetObject/HeadObject may carry; any other one names another operation.
OBJECT_READ_PARAMS = frozenset({"versionId", "partNumber", "x-id"})
CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
SQS_JSON = "application/x-amz-json-1.0"


@dataclass(frozen=True)
class Faults:
    """Failures AWS produces under load and the emulators never do, as shares of requests."""

    s3_slowdown_rate: float = 0.0  # S3 requests answered 503 SlowDown, not forwarded
    sqs_throttle_rate: float = 0.0  # SQS requests answered 400 RequestThrottled, not forwarded
    visibility_entry_failure_rate: float = 0.0  # ChangeMessageVisibilityBatch entries Failed
    # Conditional writes (If-None-Match) answered 409 ConditionalRequestConflict, not forwarded
    conditional_conflict_rate: float = 0.0
    seed: int = 0  # seeds random.Random: the same requests in the same order fail alike


NO_FAULTS = Faults()


class InjectedCounter(Counter[str]):
    """What the layer did instead of the emulator, by kind; updated from many threads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, what: str) -> None:
        """Count one more ``what``."""
        with self._lock:
            self[what] += 1

    def snapshot(self) -> Counter[str]:
        """Return a copy that no thread changes while it is read."""
        with self._lock:
            return Counter(self)


@dataclass(frozen=True)
class Request:
    """One client request, its body read in full."""

    method: str
    target: str  # path and query, as sent
    headers: Message
    body: bytes

    @property
    def path(self) -> str:
        """The path, still percent-encoded."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query parameters, ``?uploads`` style flags included with an empty value."""
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)


@dataclass(frozen=True)
class Reply:
    """An answer for the client: the emulator's, edited, or the layer's own."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


class RulesLayer:
    """The running layer: its ``endpoint``, its ``injected`` counts, and ``set_faults``."""

    def __init__(self, upstream: str, policy: dict[str, Any] | None, faults: Faults) -> None:
        """Bind a free loopback port; ``aws_rules`` serves it."""
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._policy = policy
        self._lock = threading.Lock()
        self._faults = faults
        self._random = random.Random(faults.seed)
        self._newest_handle: dict[str, str] = {}  # MessageId -> its latest ReceiptHandle
        self._message_of: dict[str, str] = {}  # every ReceiptHandle seen -> MessageId
        self.injected = InjectedCounter()
        self.server = _Server(self)
        self.endpoint = f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def set_faults(self, faults: Faults) -> None:
        """Change the fault rates from now on, restarting the random sequence at its seed."""
        with self._lock:
            self._faults = faults
            self._random = random.Random(faults.seed)

    def handle(self, request: Request) -> Reply:
        """Answer one request as AWS would, forwarding it upstream unless a rule answers."""
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSQS."):
            return self._sqs(target.removeprefix("AmazonSQS."), request)
        if _signing_service(request) == "s3":
            return self._s3(request)
        return self._forward(request)

    # --- S3 ---------------------------------------------------------------------------------

    def _s3(self, request: Request) -> Reply:
        if self._roll(lambda faults: faults.s3_slowdown_rate):
            self.injected.add("s3.slowdown")
            return _s3_error(503, "SlowDown", "Please reduce your request rate.")
        bucket, _, encoded_key = request.path.lstrip("/").partition("/")
        key = unquote_to_bytes(encoded_key)
        if (
            key
            and _is_conditional_write(request)
            and self._roll(lambda faults: faults.conditional_conflict_rate)
        ):
            self.injected.add("s3.conditional-conflict")
            return _s3_error(
                409,
                "ConditionalRequestConflict",
                "A conflicting operation occurred. If using PutObject you can retry the request. "
                "If using multipart upload you should initiate another CreateMultipartUpload "
                "request and re-upload each part.",
            )
        if key and _is_object_write(request):
            if len(key) > MAX_KEY_BYTES:
                self.injected.add("s3.key-too-long")
                return _s3_error(
                    400,
                    "KeyTooLongError",
                    "Your key is too long",
                    Size=len(key),
                    MaxSizeAllowed=MAX_KEY_BYTES,
                )
            metadata = _metadata_bytes(request.headers)
            if metadata > MAX_METADATA_BYTES and "x-amz-copy-source" not in request.headers:
                self.injected.add("s3.metadata-too-large")
                return _s3_error(
                    400,
                    "MetadataTooLarge",
                    "Your metadata headers exceed the maximum allowed metadata size",
                    Size=metadata,
                    MaxSizeAllowed=MAX_METADATA_BYTES,
                )
        reply = self._forward(request)
        if (
            reply.status == 404
            and key
            and _is_object_read(request)
            and (request.method == "HEAD" or b"<Code>NoSuchKey</Code>" in reply.body)
            and self._hides_missing_keys(unquote(bucket))
        ):
            self.injected.add("s3.403-missing-key")
            return _s3_error(403, "AccessDenied", "Access Denied")
        return reply

    def _hides_missing_keys(self, bucket: str) -> bool:
        """Whether S3 would say 403 rather than 404: the caller may not list the bucket."""
        if self._policy is None:
            return False
        return not allows(self._policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}")

    # --- SQS --------------------------------------------------------------------------------

    def _sqs(self, operation: str, request: Request) -> Reply:
        if self._roll(lambda faults: faults.sqs_throttle_rate):
            self.injected.add("sqs.throttled")
            return _sqs_error(
                "com.amazonaws.sqs#RequestThrottled", "RequestThrottled", "Rate exceeded"
            )
        try:
            params = json.loads(request.body or b"{}")
        except ValueError:
            return self._forward(request)
        rules: dict[str, Callable[[Request, dict[str, Any]], Reply]] = {
            "SendMessage": self._send_message,
            "SendMessageBatch": self._send_message_batch,
            "ReceiveMessage": self._receive_message,
            "ChangeMessageVisibility": self._change_visibility,
            "ChangeMessageVisibilityBatch": self._change_visibility_batch,
            "DeleteMessage": self._delete_message,
            "DeleteMessageBatch": self._delete_message_batch,
        }
        rule = rules.get(operation)
        if rule is None or not isinstance(params, dict):
            return self._forward(request)
        return rule(request, params)

    def _send_message(self, request: Request, params: dict[str, Any]) -> Reply:
        if _utf8_length(params.get("MessageBody", "")) > MAX_MESSAGE_BYTES:
            self.injected.add("sqs.message-too-long")
            return _sqs_error(
                "com.amazon.coral.service#InvalidParameterValueException",
                "InvalidParameterValue",
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{MAX_MESSAGE_BYTES} bytes.",
            )
        return self._forward(request)

    def _send_message_batch(self, request: Request, params: dict[str, Any]) -> Reply:
        total = sum(_utf8_length(e.get("MessageBody", "")) for e in params.get("Entries", []))
        if total > MAX_MESSAGE_BYTES:
            self.injected.add("sqs.batch-too-long")
            return _sqs_error(
                "com.amazonaws.sqs#BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                f"Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. "
                f"You have sent {total} bytes.",
            )
        return self._forward(request)

    def _receive_message(self, request: Request, params: dict[str, Any]) -> Reply:
        reply = self._forward(request)
        if reply.status == 200:
            with self._lock:
                for message in json.loads(reply.body).get("Messages", []):
                    self._newest_handle[message["MessageId"]] = message["ReceiptHandle"]
                    self._message_of[message["ReceiptHandle"]] = message["MessageId"]
        return reply

    def _is_stale(self, handle: str) -> bool:
        """Whether ``handle``'s message has been received again since it was handed out."""
        with self._lock:
            message_id = self._message_of.get(handle)
            return message_id is not None and self._newest_handle[message_id] != handle

    def _change_visibility(self, request: Request, params: dict[str, Any]) -> Reply:
        handle = params.get("ReceiptHandle", "")
        if self._is_stale(handle):
            self.injected.add("sqs.stale-receipt")
            return _sqs_error(
                "com.amazonaws.sqs#ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                _invalid_handle_message(handle),
            )
        return self._forward(request)

    def _change_visibility_batch(self, request: Request, params: dict[str, Any]) -> Reply:
        kept, failed = [], []
        for entry in params.get("Entries", []):
            handle = entry.get("ReceiptHandle", "")
            if self._is_stale(handle):
                self.injected.add("sqs.stale-receipt")
                failed.append(
                    _entry_failure(entry, "ReceiptHandleIsInvalid", _invalid_handle_message(handle))
                )
            elif self._roll(lambda faults: faults.visibility_entry_failure_rate):
                self.injected.add("sqs.visibility-entry-failed")
                failed.append(
                    _entry_failure(entry, "InternalError", "Internal error", sender_fault=False)
                )
            else:
                kept.append(entry)
        return self._forward_batch(request, params, kept, succeeded=[], failed=failed)

    def _delete_message(self, request: Request, params: dict[str, Any]) -> Reply:
        if self._is_stale(params.get("ReceiptHandle", "")):
            self.injected.add("sqs.stale-receipt")
            return _sqs_reply({})
        return self._forward(request)

    def _delete_message_batch(self, request: Request, params: dict[str, Any]) -> Reply:
        kept, succeeded = [], []
        for entry in params.get("Entries", []):
            if self._is_stale(entry.get("ReceiptHandle", "")):
                self.injected.add("sqs.stale-receipt")
                succeeded.append({"Id": entry.get("Id")})
            else:
                kept.append(entry)
        return self._forward_batch(request, params, kept, succeeded=succeeded, failed=[])

    def _forward_batch(
        self,
        request: Request,
        params: dict[str, Any],
        kept: list[dict[str, Any]],
        *,
        succeeded: list[dict[str, Any]],
        failed: list[dict[str, Any]],
    ) -> Reply:
        """Forward the ``kept`` entries and add the layer's own results to the answer.

        Entries keep their Ids, so the emulator's results and the layer's merge as they are.
        """
        if not succeeded and not failed:
            return self._forward(request)
        if not kept:
            return _sqs_reply({"Successful": succeeded, "Failed": failed})
        body = json.dumps({**params, "Entries": kept}).encode()
        reply = self._forward(replace(request, body=body))
        if reply.status != 200:
            return reply
        answer = json.loads(reply.body)
        answer["Successful"] = [*answer.get("Successful", []), *succeeded]
        answer["Failed"] = [*answer.get("Failed", []), *failed]
        return replace(reply, body=json.dumps(answer).encode())

    # --- plumbing ---------------------------------------------------------------------------

    def _roll(self, rate_of: Callable[[Faults], float]) -> bool:
        """Draw whether a fault strikes now; no draw at all while its rate is 0."""
        with self._lock:
            rate = rate_of(self._faults)
            return rate > 0 and self._random.random() < rate

    def _forward(self, request: Request) -> Reply:
        """Send ``request`` to the emulator as it came (Host included) and return its answer."""
        connection = http.client.HTTPConnection(*self._upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            connection.putrequest(
                request.method, request.target, skip_host=True, skip_accept_encoding=True
            )
            for name, value in request.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            framed = "Content-Length" in request.headers or "Transfer-Encoding" in request.headers
            if request.body or framed:
                connection.putheader("Content-Length", str(len(request.body)))
            connection.endheaders(request.body)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            # 502 is a transient error to botocore: the client retries, as after a network blip.
            return Reply(502, [("Content-Type", "text/plain")], f"upstream: {error}".encode())
        finally:
            connection.close()
        # A HEAD answer has no body but announces the object's length: keep that header.
        headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in HOP_BY_HOP
            or (request.method == "HEAD" and name.lower() == "content-length")
        ]
        return Reply(response.status, headers, body)


class _Server(ThreadingHTTPServer):
    """A thread per client connection, each relaying through ``layer``."""

    daemon_threads = True
    request_queue_size = 128  # a fleet of workers opens connections in bursts

    def __init__(self, layer: RulesLayer) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.layer = layer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up mid-request (a SIGKILLed worker does)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the layer answer it, writes the answer; keeps connections open."""

    protocol_version = "HTTP/1.1"  # keep-alive for boto3's pool; answers 100-continue itself
    server: _Server

    def _relay(self) -> None:
        request = Request(self.command, self.path, self.headers, self._read_body())
        self._send(self.server.layer.handle(request))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _relay

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailer fields, up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, reply: Reply) -> None:
        self.send_response_only(reply.status)  # no Server/Date of our own: the emulator's stay
        for name, value in reply.headers:
            self.send_header(name, value)
        has_length = any(name.lower() == "content-length" for name, _ in reply.headers)
        if not has_length and reply.status not in (204, 304):
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


@contextlib.contextmanager
def aws_rules(
    upstream: str, policy: dict[str, Any] | None = None, faults: Faults = NO_FAULTS
) -> Iterator[RulesLayer]:
    """Serve the rules layer in front of ``upstream`` for the duration of the block.

    ``policy`` is the caller's IAM identity policy, for the rules that depend on permissions;
    None leaves the emulator's answers on those points as they are.
    """
    layer = RulesLayer(upstream, policy, faults)
    # A short poll interval: shutting down waits for one poll, and tests start many layers.
    thread = threading.Thread(
        target=layer.server.serve_forever, args=(0.05,), name="aws-rules", daemon=True
    )
    thread.start()
    try:
        yield layer
    finally:
        layer.server.shutdown()
        layer.server.server_close()
        thread.join()


def _signing_service(request: Request) -> str:
    """Return the service a SigV4 request was signed for (header or presigned URL), or ''."""
    match = CREDENTIAL.search(request.headers.get("Authorization", ""))
    credential = match.group(1) if match else request.query.get("X-Amz-Credential", [""])[0]
    scope = credential.split("/")  # access key / date / region / service / aws4_request
    return scope[3] if len(scope) == 5 else ""


def _is_object_write(request: Request) -> bool:
    """PutObject or CopyObject, or CreateMultipartUpload."""
    return _is_whole_object_put(request) or (
        request.method == "POST" and "uploads" in request.query
    )


def _is_conditional_write(request: Request) -> bool:
    """PutObject or CompleteMultipartUpload carrying ``If-None-Match`` (the writes S3 may 409)."""
    if "If-None-Match" not in request.headers:
        return False
    return _is_whole_object_put(request) or (
        request.method == "POST" and "uploadId" in request.query
    )


def _is_whole_object_put(request: Request) -> bool:
    """Whether it is a PUT with no subresource: PutObject or CopyObject, not UploadPart."""
    return request.method == "PUT" and set(request.query) <= {"x-id"}


def _is_object_read(request: Request) -> bool:
    """GetObject or HeadObject, not an object subresource such as ``?tagging`` or ``?acl``."""
    return request.method in ("GET", "HEAD") and all(
        name in OBJECT_READ_PARAMS or name.startswith("response-") for name in request.query
    )


def _metadata_bytes(headers: Message) -> int:
    """Size of the user metadata as S3 counts it: UTF-8 bytes of every key and value.

    Header values arrive decoded as Latin-1, so encoding them back gives the bytes sent.
    """
    prefix = "x-amz-meta-"
    return sum(
        len(name[len(prefix) :].encode("latin-1")) + len(value.encode("latin-1"))
        for name, value in headers.items()
        if name.lower().startswith(prefix)
    )


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _s3_error(status: int, code: str, message: str, **details: object) -> Reply:
    """Build an S3 REST error document; the handler leaves the body out of a HEAD answer."""
    request_id = uuid.uuid4().hex[:16].upper()
    fields = {"Code": code, "Message": message, **details, "RequestId": request_id}
    xml = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in fields.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{xml}</Error>'.encode()
    return Reply(
        status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], body
    )


def _sqs_reply(
    answer: dict[str, Any], status: int = 200, extra: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """Build an SQS JSON-protocol answer."""
    headers = [("Content-Type", SQS_JSON), ("x-amzn-RequestId", str(uuid.uuid4())), *extra]
    return Reply(status, headers, json.dumps(answer).encode())


def _sqs_error(error_type: str, query_code: str, message: str) -> Reply:
    """Build an SQS JSON-protocol error, with the query-protocol code botocore calls Code.

    SQS is "awsQueryCompatible": ``x-amzn-query-error`` carries the code the old XML API used
    (``AWS.SimpleQueueService.BatchRequestTooLong``...), which botocore puts in ``Code``.
    """
    return _sqs_reply(
        {"__type": error_type, "message": message},
        400,
        (("x-amzn-query-error", f"{query_code};Sender"),),
    )


def _entry_failure(
    entry: dict[str, Any], code: str, message: str, *, sender_fault: bool = True
) -> dict[str, Any]:
    """One ``Failed`` item of a batch answer."""
    return {"Id": entry.get("Id"), "SenderFault": sender_fault, "Code": code, "Message": message}


def _invalid_handle_message(handle: str) -> str:
    return f'The input receipt handle "{handle}" is not a valid receipt handle.'
