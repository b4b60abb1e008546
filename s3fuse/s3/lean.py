"""HeadObject and small PutObject without botocore's per-request machinery: the HEADs a
lookup or a directory scan sends by the hundred, and the PUT of every small file.

botocore spends ~2 ms of CPU on each of these here (its event hooks, endpoint rules,
response parsing); on 2 cores shared with the server that CPU is what limits how many
stats or small files a second a mount handles. This path builds the request with the
client's own serializer (botocore's model and parameter validation), signs it with the
client's own signer (its credentials, refreshed by botocore; its signature version),
sends it through the client's own connection pool (its timeouts, proxies, CA bundle)
and reads the answer's headers with a table made from botocore's model of the answer.

What it does not know it leaves to botocore: the object URL and the signing context are
learnt from botocore's own requests of the same operation (addressing style, region,
endpoint rules, a region redirect: all botocore's). Until one has been sent, and for any
answer but 200 (and 404 for a HEAD), any failure to build or send, the caller sends the
request through botocore, which retries and explains errors as usual. The caller does
not use this path with SSE-C or with request checksums other than Content-MD5.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

from s3fuse.s3.types import Stats

log = logging.getLogger(__name__)


class Fallback:
    """Marks an answer this path leaves to botocore."""


FALLBACK: Final = Fallback()

# what a request's context holds that is the same for every request of an operation
# (the rest, such as its parameters and retry count, is per request)
_SHARED_CONTEXT = (
    "client_region", "client_config", "has_streaming_input", "auth_type", "unsigned_payload",
    "auth_options", "signing", "endpoint_properties",
)  # fmt: skip

Reader = Callable[[str], Any]


def _boolean(text: str) -> bool:
    return text == "true"  # as botocore's rest-xml parser reads a header


@dataclass
class _Learnt:
    prefix: str  # the object URL up to the key
    context: dict[str, Any]
    user_agent: str


@dataclass
class _Answer:
    fields: dict[str, tuple[str, Reader]]  # lower-case header -> (member name, reader)
    meta_prefix: str  # "x-amz-meta-" where the answer has a Metadata map


class Lean:
    OPERATIONS = ("HeadObject", "PutObject")

    def __init__(
        self, client: Any, bucket: str, parse_timestamp: Reader, stats: Stats
    ) -> None:  # fmt: skip
        self._client = client
        self._stats = stats
        self._bucket = bucket
        self._learnt: dict[str, _Learnt] = {}
        self._answers: dict[str, _Answer] = {}
        for op in self.OPERATIONS:
            answer = self._answer_of(op, parse_timestamp)
            if answer is not None:
                self._answers[op] = answer
                client.meta.events.register(f"before-sign.s3.{op}",
                                            functools.partial(self._learn, op))  # fmt: skip

    def _answer_of(self, op: str, parse_timestamp: Reader) -> _Answer | None:
        """How to read the operation's answer, from the model; None (this path stays off
        for it) when the model holds a kind of header this cannot read."""
        readers: dict[str, Reader] = {
            "string": str, "integer": int, "long": int, "boolean": _boolean,
            "timestamp": parse_timestamp,
        }  # fmt: skip
        shape = self._client.meta.service_model.operation_model(op).output_shape
        answer = _Answer({}, "")
        for name, member in shape.members.items():
            where = member.serialization.get("location")
            header = str(member.serialization.get("name", ""))
            if where == "headers" and member.type_name == "map":
                answer.meta_prefix = header.lower()
            elif (
                where == "header"
                and member.type_name in readers
                and not member.serialization.get("jsonvalue")
            ):
                answer.fields[header.lower()] = (name, readers[member.type_name])
            elif where in ("header", "headers"):
                log.debug("%s answer member %s (%s) is not read here; botocore sends "
                          "every %s", op, name, member.type_name, op)  # fmt: skip
                return None
        return answer

    def _learn(self, op: str, request: Any, **_: Any) -> None:
        """Note the URL and context of a request botocore built for our bucket."""
        params = request.context.get("input_params") or {}
        key = params.get("Key")
        if params.get("Bucket") != self._bucket or not isinstance(key, str):
            return  # ours (no input_params), or another bucket's
        if op == "HeadObject" and len(params) != 2:
            return  # one with more parameters (a version, a condition): not a model
        if (request.context.get("checksum") or {}).get("request_algorithm"):
            return  # botocore adds a checksum this path would not
        encoded = percent_encode(key, safe="/~")
        url = str(request.url)
        if "?" in url or not url.endswith(encoded):
            return
        self._learnt[op] = _Learnt(
            url[: len(url) - len(encoded)],
            {k: request.context[k] for k in _SHARED_CONTEXT if k in request.context},
            str(request.headers.get("User-Agent", "")),
        )

    def _send(
        self, op: str, method: str, key: str, body: bytes | None, headers: dict[str, str]
    ) -> Any:
        """The response to the request, or FALLBACK when it could not be sent."""
        learnt = self._learnt.get(op)
        if learnt is None:
            return FALLBACK
        try:
            request = AWSRequest(method, learnt.prefix + percent_encode(key, safe="/~"),
                                 data=body, headers=headers)  # fmt: skip
            if learnt.user_agent:
                request.headers["User-Agent"] = learnt.user_agent
            request.context.update(learnt.context)
            if "signing" in request.context:  # handlers may change it for one request
                request.context["signing"] = dict(request.context["signing"])
            self._client._request_signer.sign(op, request)
            self._stats.attempt(op)
            response = self._client._endpoint.http_session.send(request.prepare())
        except Exception as e:
            log.debug("%s %r left to botocore: %s", op, key, e)
            return FALLBACK
        log.debug("%s -> %s", op, response.status_code)
        return response

    def head(self, key: str) -> dict[str, Any] | Fallback | None:
        """botocore's HeadObject answer (without ResponseMetadata), None for 404, or
        FALLBACK. Counted in stats as the client's event hooks count botocore's."""
        response = self._send("HeadObject", "HEAD", key, None, {})
        if response is FALLBACK or response.status_code not in (200, 404):
            return FALLBACK
        self._stats.count("HeadObject")
        if response.status_code == 404:
            return None
        return self._read("HeadObject", response.headers)

    def put(self, key: str, body: bytes, params: dict[str, Any]) -> dict[str, Any] | Fallback:
        """botocore's PutObject answer for a body held in memory (ResponseMetadata has
        only the HTTP headers), or FALLBACK: then nothing is known about whether the
        object was stored, exactly as after a failed attempt of botocore's own."""
        if "PutObject" not in self._learnt:
            return FALLBACK
        try:
            built = self._client._serializer.serialize_to_request(
                {"Bucket": self._bucket, "Key": key, "Body": body, **params},
                self._client.meta.service_model.operation_model("PutObject"),
            )
        except Exception as e:  # the parameters botocore would refuse: it says why
            log.debug("PutObject %r left to botocore: %s", key, e)
            return FALLBACK
        if built.get("query_string"):
            return FALLBACK
        response = self._send("PutObject", "PUT", key, body, dict(built["headers"]))
        if response is FALLBACK or response.status_code != 200:
            return FALLBACK
        self._stats.count("PutObject")
        out = self._read("PutObject", response.headers)
        out["ResponseMetadata"] = {"HTTPHeaders": {k.lower(): v for k, v in
                                                   response.headers.items()}}  # fmt: skip
        return out

    def _read(self, op: str, headers: Any) -> dict[str, Any]:
        answer = self._answers[op]
        out: dict[str, Any] = {}
        meta: dict[str, str] = {}
        prefix = answer.meta_prefix
        for header, value in headers.items():
            lower = header.lower()
            field = answer.fields.get(lower)
            if field is not None:
                name, read = field
                if name == "Expires":
                    # botocore keeps the raw value and drops a timestamp it cannot read
                    out["ExpiresString"] = value
                    with contextlib.suppress(ValueError, RuntimeError, OverflowError):
                        out[name] = read(value)
                    continue
                out[name] = read(value)
            elif prefix and lower.startswith(prefix):
                meta[header[len(prefix) :]] = value
        if prefix:
            out["Metadata"] = meta
        return out
