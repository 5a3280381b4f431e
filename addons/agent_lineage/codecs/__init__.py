"""Wire-API codecs, chosen by request path (never by host: these APIs are served anywhere)."""

from __future__ import annotations

from ..model import endpoint
from .anthropic_messages import AnthropicMessages
from .base import Codec, MalformedBody, StreamAccumulator
from .gemini import Gemini
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses

CODECS: tuple[Codec, ...] = (OpenAIChat(), OpenAIResponses(), AnthropicMessages(), Gemini())


def codec_for(method: str, path: str) -> Codec | None:
    """The codec for an LLM request, or None for any other traffic."""
    if method != "POST":
        return None
    route = endpoint(path)
    return next((codec for codec in CODECS if codec.matches(route)), None)


__all__ = ["CODECS", "Codec", "MalformedBody", "StreamAccumulator", "codec_for"]
