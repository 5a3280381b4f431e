"""mitmproxy addon for tests: in forward-proxy mode, send the real LLM API hosts to a local upstream.

A CLI run with `HTTPS_PROXY` talks to api.anthropic.com / api.openai.com; this addon rewrites
those requests to the demo upstream on 127.0.0.1, and refuses every other host at once (a 403 to
the CONNECT or the request), so nothing leaves the machine and nothing waits on the network.
Load it before the lineage addon, so the lineage addon sees the request as it will be sent:

    mitmdump -s tests/upstream_redirect.py --set redirect_to=127.0.0.1:8765 -s addons/lineage.py \
             --set connection_strategy=lazy --set upstream_cert=false

(`connection_strategy=lazy` and `upstream_cert=false`: mitmproxy must not try to reach the real
host before the request is rewritten.)
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http

log = logging.getLogger("upstream_redirect")

DEFAULT_HOSTS = "api.anthropic.com,api.openai.com"


class UpstreamRedirect:
    def load(self, loader: Any) -> None:
        loader.add_option("redirect_to", str, "", "host:port of the local upstream that gets the LLM API hosts' requests")
        loader.add_option("redirect_hosts", str, DEFAULT_HOSTS, "comma-separated host names sent to redirect_to")

    def _hosts(self) -> set[str]:
        return {h.strip().lower() for h in ctx.options.redirect_hosts.split(",") if h.strip()}

    def _target(self) -> tuple[str, int] | None:
        host, _, port = ctx.options.redirect_to.rpartition(":")
        return (host, int(port)) if host and port.isdigit() else None

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.request.host.lower() not in self._hosts():
            log.info("refused CONNECT %s:%s", flow.request.host, flow.request.port)
            flow.response = http.Response.make(403, b"refused by tests/upstream_redirect.py\n")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        target = self._target()
        host = flow.request.host.lower()
        if target and host in self._hosts():
            flow.request.scheme = "http"
            flow.request.host, flow.request.port = target
        elif target is None or (host, flow.request.port) != target:
            log.info("refused %s %s", flow.request.method, flow.request.pretty_url)
            flow.response = http.Response.make(403, b"refused by tests/upstream_redirect.py\n")


addons = [UpstreamRedirect()]
