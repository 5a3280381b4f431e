"""The "LLM call" content view in mitmweb and the mitmproxy console, on mitmproxy 11 and 12.

mitmproxy 12 replaced the content view API: 11 has `contentviews.View` (`__call__` returns a
description and lines of `(style, text)`, `add`/`remove` register), 12 has the
`contentviews.Contentview` protocol (`prettify` returns text, `add` registers and there is no
removal: adding a view of the same name replaces it, which is what a script reload does).
Both adapters render through `conversation`, from the flow itself, so a saved flow opened later
(`mitmweb -r flows.mitm`) shows the same view, its lineage read from the flow's metadata.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import contentviews, http

from . import flows
from .calls import read_response, start_call
from .codecs import MalformedBody, codec_for
from .console import LINEAGE_KEY
from .conversation import Line, Lineage, plain_text, request_lines, response_lines

NAME = "LLM call"
PRIORITY = 2  # above the JSON view (1): an LLM call opens in this view
NEW_API = hasattr(contentviews, "Contentview")  # mitmproxy 12+


def render(flow: Any, message: Any) -> list[Line]:
    """The lines for `message` (the flow's request or response); ValueError if it is no LLM call."""
    if not isinstance(flow, http.HTTPFlow) or message is None:
        raise ValueError("not an HTTP flow")
    try:
        call = start_call(flows.request_exchange(flow))
    except MalformedBody as e:
        raise ValueError(str(e)) from None
    if call is None:
        raise ValueError("not an LLM request")
    request = flow.request
    stamped = {name: request.headers[name] for name in flows.LINEAGE_HEADERS if name in request.headers}
    sent = flow.metadata.get(flows.CLIENT_LINEAGE_KEY)
    lineage = Lineage.from_record(flow.metadata.get(LINEAGE_KEY), stamped, sent if isinstance(sent, dict) else {})
    if message is flow.response:
        status, headers, _ = flows.response_parts(flow)
        error = flows.error_text(flow)
        read_response(call, status, headers, flow.response.raw_content, flow.response.timestamp_end, error)
        return response_lines(call, lineage)
    return request_lines(call, lineage)


def priority(data: bytes, flow: Any) -> float:
    if not data or not isinstance(flow, http.HTTPFlow):
        return 0
    return PRIORITY if codec_for(flow.request.method, flow.request.path) else 0


if NEW_API:

    class LLMCallView(contentviews.Contentview):  # type: ignore[name-defined,misc]  # mitmproxy 12 only
        name = NAME
        syntax_highlight = "none"

        def prettify(self, data: bytes, metadata: Any) -> str:
            return plain_text(render(metadata.flow, metadata.http_message))

        def render_priority(self, data: bytes, metadata: Any) -> float:
            return priority(data, metadata.flow)

else:

    class LLMCallView(contentviews.View):  # type: ignore[no-redef]
        name = NAME

        def __call__(self, data: bytes, *, flow: Any = None, http_message: Any = None, **unknown: Any) -> Any:
            try:
                lines = render(flow, http_message)
            except ValueError:
                return None  # mitmproxy falls back to the raw view
            return NAME, iter(lines)

        def render_priority(self, data: bytes, *, flow: Any = None, **unknown: Any) -> float:
            return priority(data, flow)


VIEW = LLMCallView()


def register() -> None:
    """Idempotent: one view for every addon instance (tests load several; mitmproxy 11 refuses a
    second view of the same name)."""
    if NEW_API or VIEW not in contentviews.views:
        contentviews.add(VIEW)


def unregister() -> None:
    if not NEW_API and VIEW in contentviews.views:
        contentviews.remove(VIEW)
