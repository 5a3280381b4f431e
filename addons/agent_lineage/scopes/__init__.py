"""From a stream of Calls to sessions, agents (nested to any depth) and turns.

A decision is made when a request arrives (lineage headers go out with it) and the tracker
learns from each response when it ends. Evidence, strongest first:

1. lineage the client already sent (`x-dynamo-*`), unless told to override it;
2. harness ids (harness.yaml: Claude Code, Codex, OpenCode headers and body fields);
3. conversation threading: a request whose message list extends an earlier call's list
   (request plus response) continues that conversation. States are indexed by
   (client, API, opening messages, length, last message) and a request is looked up from its end
   backwards, so the cost is proportional to its new messages. Tool results, Responses
   `previous_response_id` and `prompt_cache_key` link too;
4. content and timing: a new conversation whose first real user text is (mostly) an argument
   of a tool call of the same client (open, or closed moments ago for asynchronous spawns) is
   that call's subagent; failing that, a delegation call made just before decides if it names no
   task and the newcomer runs under a system prompt of its own (or its client marks it as a
   subagent). A fresh user message (or an idle gap) opens a turn of the root session;
5. side requests (token counts, titles, quota probes) keep their session's lineage but are
   marked so they stay out of the agent's steps; one that names no session is `pending` until a
   session start of its host claims it.

Every decision records the evidence behind it in `Scope.evidence`. Time is the traffic's own
(call timestamps), never the wall clock, so a replay gives the same ids and decisions.

The parts: `tracker` (the decision, evidence by evidence), `conversations` (sessions, agents and
the indexes that thread requests, with eviction), `delegation` (tool calls, quotes, which call
started which subagent), `turns`, and `side_requests` (side requests and the orphans waiting
for a session start).
"""

from .side_requests import Orphans
from .tracker import ScopeTracker

__all__ = ["Orphans", "ScopeTracker"]
