"""From an Exchange to a Call: pick the codec, parse the request, read the response as it arrives."""

from __future__ import annotations

import json
from typing import Any

import orjson

from .codecs import CODECS, Codec, MalformedBody, codec_for
from .codecs.base import parsing
from .model import Call, Exchange, Response
from .settings import DEFAULTS
from .sse import BodyTooLarge, SSEParser, decode_body, incremental_decoder

CODEC_BY_API = {codec.api: codec for codec in CODECS}


class NotObserved(MalformedBody):
    """An LLM request whose body decodes to more than we observe: `call` records that it passed."""

    def __init__(self, call: Call, reason: str) -> None:
        super().__init__(reason)
        self.call = call


def start_call(exchange: Exchange, max_decoded: int = DEFAULTS.max_decoded_bytes) -> Call | None:
    """The Call for an LLM request, None for other traffic; MalformedBody if it cannot be read
    (NotObserved if its body decodes to more than `max_decoded` bytes)."""
    codec = codec_for(exchange.method, exchange.path)
    if codec is None:
        return None
    call = Call(
        exchange_id=exchange.id,
        api=codec.api,
        path=exchange.path,
        client=exchange.client,
        headers=exchange.request_headers,
        t_start=exchange.t_request,
    )
    try:
        body = _json_body(exchange.request_body, exchange.request_headers.get("content-encoding"), max_decoded)
    except BodyTooLarge as e:
        call.error = f"request body not observed: it {e}"
        raise NotObserved(call, call.error) from None
    if not isinstance(body, dict):
        raise MalformedBody("request body is not a JSON object")
    with parsing(body):
        codec.parse_request(body, call)
    return call


def _json_body(raw: bytes | None, content_encoding: str | None, max_decoded: int) -> Any:
    if raw is None:
        raise MalformedBody("its body was streamed upstream unread (raise mitmproxy's stream_large_bodies)")
    if not raw:
        raise MalformedBody("empty request body")
    try:
        data = decode_body(raw, content_encoding, max_decoded)
    except BodyTooLarge:
        raise
    except Exception as e:  # a corrupt compressed body
        raise MalformedBody(f"cannot decode request body ({content_encoding}): {e}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        # JS clients that cut a string mid-emoji send lone surrogate escapes (`"\ud83d"`):
        # orjson refuses them, the standard parser takes them.
        try:
            return _replace_lone_surrogates(json.loads(data))
        except ValueError:
            raise MalformedBody(f"request body is not JSON ({e})") from None
        except RecursionError:  # orjson stops at 1024 levels, the standard parser near 1000
            raise MalformedBody("request body is nested too deeply to read") from None


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


class ResponseReader:
    """Follows one response body chunk by chunk (as on the wire, maybe compressed).

    Decides from the first bytes whether the body is an event stream or one JSON document, keeps
    only what the SSE parser needs for the event stream, and never raises: a body it cannot read
    is reported through `problem` and the traffic is left alone.
    """

    def __init__(self, call: Call, status: int | None, headers: dict[str, str], max_decoded: int = DEFAULTS.max_decoded_bytes) -> None:
        self.call = call
        self.max_decoded = max_decoded
        self._observed = 0  # decoded bytes so far
        self.codec: Codec = CODEC_BY_API[call.api]
        self.status = status
        self.problem: str | None = None
        self._sse_declared = "text/event-stream" in headers.get("content-type", "")
        self._mode: str | None = None  # "sse" or "json", decided on the first bytes
        self._json_parts: list[bytes] = []
        self._sse = SSEParser()
        self._stream = self.codec.stream_accumulator()
        try:
            self._decode = incremental_decoder(headers.get("content-encoding"), max_decoded)
        except ValueError as e:
            self._decode = None
            self.problem = str(e)

    def feed(self, chunk: bytes) -> None:
        if self.problem or not chunk:
            return
        try:
            data = self._decode(chunk) if self._decode else chunk
            self._observed += len(data)
            if self._observed > self.max_decoded:
                raise BodyTooLarge(self.max_decoded)
            if self._mode is None:
                head = data.lstrip()
                if not head:
                    return
                self._mode = "json" if head[:1] in (b"{", b"[") and not self._sse_declared else "sse"
            if self._mode == "json":
                self._json_parts.append(data)
            else:
                for event in self._sse.feed(data):
                    self._stream.event(event)
        except BodyTooLarge as e:  # what we hold is let go: the rest passes unobserved
            self.problem = f"response body not observed: it {e}"
            self._json_parts = []
            self._sse = SSEParser()
            self._stream = self.codec.stream_accumulator()
            self._mode = "unobserved"
        except Exception as e:  # a corrupt body must not reach the proxy
            self.problem = f"cannot read response body: {e!r}"

    def answered(self) -> Response | None:
        """The response, once an event stream has delivered its terminal event (the end of the
        HTTP body may still be on its way); None before that, and for JSON bodies."""
        if self._mode != "sse" or self.problem or not self._stream.finished:
            return None
        try:
            return self._stream.result()
        except Exception as e:  # an answer we cannot read: `finish` records the problem
            self.problem = f"unreadable response body: {e}"
            return None

    def finish(self, t_end: float | None, error: str | None = None) -> Call:
        """Fill in the response half of the call; `error` is a transport failure, if any."""
        call = self.call
        call.status = self.status
        call.t_end = t_end
        call.response = self._response()
        problems = [p for p in (error, self._http_error(call.response), self.problem) if p]
        call.error = "; ".join(problems) or None
        return call

    def _response(self) -> Response:
        try:
            if self._mode == "json":
                return self.codec.parse_response(orjson.loads(b"".join(self._json_parts)))
            if self._mode == "sse":
                for event in self._sse.close():
                    self._stream.event(event)
                return self._stream.result()
        except (orjson.JSONDecodeError, MalformedBody) as e:
            self.problem = self.problem or f"unreadable response body: {e}"
        except Exception as e:
            self.problem = self.problem or f"cannot read response body: {e!r}"
        return Response()

    def _http_error(self, response: Response) -> str | None:
        if self.status is not None and self.status >= 400:
            return f"HTTP {self.status}" + (f": {response.error}" if response.error else "")
        return response.error


def read_response(
    call: Call,
    status: int | None,
    headers: dict[str, str],
    body: bytes | None,
    t_end: float | None,
    error: str | None = None,
    max_decoded: int = DEFAULTS.max_decoded_bytes,
) -> Call:
    """A whole response at once (buffered live responses and saved flows)."""
    reader = ResponseReader(call, status, headers, max_decoded)
    if body:
        reader.feed(body)
    return reader.finish(t_end, error)
