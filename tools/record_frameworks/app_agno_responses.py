"""Agno teams on the OpenAI Responses API, chained by `previous_response_id`.

The app of app_agno.py (the same teams, script and truth) with `OpenAIResponses` and a reasoning
model id, for which Agno stores responses and continues every conversation by
`previous_response_id`, sending only the new input items: a tool call's continuation, and the
leader's second turn, carry no history of their own on the wire.
"""

from __future__ import annotations

from functools import partial

import app_agno
from agno.models.openai import OpenAIResponses
from harness import run

REASONING_MODEL = "o4-mini"  # Agno chains by previous_response_id for reasoning models only

if __name__ == "__main__":
    run(
        "agno",
        ["agno", "openai", "httpx", "httpx2"],
        app_agno.respond,
        partial(app_agno.app, model_class=OpenAIResponses, model_id=REASONING_MODEL),
        {
            "sessions": len(app_agno.TOPICS),
            "api": "responses, chained by previous_response_id",
            "shape": "as agno: editorial Team -> research Team (economist + historian in parallel) and writer; session summaries (side)",
        },
        app_agno.PROMPTS,
    )
