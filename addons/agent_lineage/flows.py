"""Reading mitmproxy HTTP flows (live or saved) into Exchanges.

Duck-typed on the flow's attributes so the core never imports mitmproxy; the same function
serves the live addon and the offline reader, which is what makes them agree.
"""

from __future__ import annotations

import re
from typing import Any

from .lineage import PARENT_HEADER, SESSION_HEADER
from .model import REDACTED, SECRET_HEADERS, SECRET_QUERY_PARAMS, Exchange

LINEAGE_HEADERS = (SESSION_HEADER, PARENT_HEADER)
CLIENT_LINEAGE_KEY = "agent_lineage.client_lineage"  # flow.metadata: the client's lineage headers
_QUERY_PARAM = re.compile(r"([?&])([^=&#]+)=([^&#]*)")


def remember_client_lineage(flow: Any, sent: dict[str, str]) -> None:
    """Keep the client's own lineage headers (`sent`: its request headers, as request_exchange
    read them) in the flow, which is saved with it, before we stamp ours."""
    flow.metadata[CLIENT_LINEAGE_KEY] = {name: sent[name] for name in LINEAGE_HEADERS if name in sent}


def plain_headers(headers: Any) -> dict[str, str]:
    """Lower-cased header names, repeated fields joined with ', ', secret values left out."""
    result: dict[str, str] = {}
    for name, value in headers.items(multi=True):
        key = name.lower()
        if key in SECRET_HEADERS:
            continue
        result[key] = f"{result[key]}, {value}" if key in result else value
    return result


def redact_query(path: str) -> str:
    """The path with the values of key-like query parameters (Gemini's `?key=`) blanked."""
    if "?" not in path:
        return path
    return _QUERY_PARAM.sub(lambda m: f"{m[1]}{m[2]}={REDACTED}" if m[2].lower() in SECRET_QUERY_PARAMS else m[0], path)


def client_of(flow: Any) -> str:
    """Who sent the request: the peer's host and the user agent (ports change per connection)."""
    peer = getattr(flow.client_conn, "peername", None)
    host = peer[0] if peer else ""
    return f"{host} {flow.request.headers.get('user-agent', '')}".strip()


def request_exchange(flow: Any) -> Exchange:
    """The request as the client sent it: lineage headers we stamped (saved flows hold the stamped
    request) are put back to the client's own values, kept in the flow's metadata."""
    request = flow.request
    headers = plain_headers(request.headers)
    sent = flow.metadata.get(CLIENT_LINEAGE_KEY)
    if sent is not None:
        for name in LINEAGE_HEADERS:
            headers.pop(name, None)
        headers.update(sent)
    return Exchange(
        id=flow.id,
        method=request.method,
        path=redact_query(request.path),
        request_headers=headers,
        request_body=request.raw_content,
        t_request=request.timestamp_start,
        client=client_of(flow),
    )


def response_parts(flow: Any) -> tuple[int | None, dict[str, str], float | None]:
    """Status, headers and first-byte time of the flow's response, if one started."""
    response = flow.response
    if response is None:
        return None, {}, None
    return response.status_code, plain_headers(response.headers), response.timestamp_start


def end_time(flow: Any) -> float | None:
    if flow.response is not None and flow.response.timestamp_end:
        return flow.response.timestamp_end
    if flow.error is not None:
        return flow.error.timestamp
    return None


def error_text(flow: Any) -> str | None:
    return flow.error.msg if flow.error is not None else None
