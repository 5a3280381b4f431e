"""A local imitation of the OpenAI and Anthropic LLM APIs (`upstream`) and a scripted agent
that talks to it like a bare SDK app (`driver`): demos and tests run without any real model."""
