"""Turns of a root session: a harness turn id, fresh user text, or an idle gap opens one."""

from __future__ import annotations

from ..harness import HarnessIds, HarnessTable
from ..model import Call, Message, Scope
from ..settings import Settings
from .conversations import TrackedAgent


class Turns:
    def __init__(self, table: HarnessTable, settings: Settings) -> None:
        self.table = table
        self.settings = settings

    def decide(self, call: Call, agent: TrackedAgent, ids: HarnessIds | None, scope: Scope, restarted: bool) -> None:
        """`restarted`: a known agent whose request continues no known state (context compaction
        restarts the conversation with a summary): its opening user message is not a new turn."""
        session = agent.session
        gap = session.turn > 0 and call.t_start - session.last_t > self.settings.turn_gap_seconds
        if ids is not None and ids.turn:
            opens = ids.turn not in session.turn_ids
            session.turn_ids.add(ids.turn)
            how = "harness-turn-id"
        else:
            opens = agent.parent is None and not restarted and self._fresh_user_input(call, agent)
            how = "fresh-user-message"
        if not opens and gap and agent.parent is None:
            opens, how = True, "idle-gap"
        if opens or session.turn == 0:
            session.turn += 1
            scope.new_turn = True
            scope.evidence["turn"] = how
            if not session.first_prompt:
                session.first_prompt = self.last_user_text(call.messages)
        scope.turn = session.turn

    def last_user_text(self, messages: list[Message]) -> str:
        text = next((m.text for m in reversed(messages) if m.role == "user" and m.text and not m.tool_results), "")
        return self.table.without_text_noise(text)

    def _fresh_user_input(self, call: Call, agent: TrackedAgent) -> bool:
        """The last message (mid-conversation system entries aside) is new user text, not tool results.

        A request that repeats a known state adds nothing new: after a failed attempt it is a
        retry (same turn); after a successful one the user asked again (a new turn).
        """
        messages = call.new_messages
        if not messages:
            if len(call.messages) in agent.failed_lengths:
                return False
            messages = call.messages
        last = next((m for m in reversed(messages) if m.role != "system"), None)
        if last is None or last.role != "user" or last.tool_results:
            return False
        if not self.table.without_text_noise(last.text):
            return False
        return not self.table.is_chatter(last.text)
