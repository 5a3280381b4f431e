"""Check a trajectory against ATIF v1.7: the official models plus the spec's stricter rules.

`nat.atif` (the official pydantic models) checks types, unknown keys, step_id order, agent-only
fields, observation ids and embedded trajectory ids. It is more lenient than the spec, so the
rules it does not enforce are checked here on the raw JSON (`_check_trajectory`, `_check_step`). The
models check step_id order and observation ids only once a trajectory's fields are valid, so
fixing one problem can reveal another.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nat.atif import ATIF_VERSION, Trajectory
from pydantic import ValidationError

SCHEMA_VERSION = ATIF_VERSION  # "ATIF-v1.7", as the official models (nat.atif) define it
AGENT_ONLY_FIELDS = ("model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics")


def validate_trajectory(document: Any) -> list[str]:
    """Every problem found, one line each, led by its JSON path; [] for a valid trajectory."""
    if not isinstance(document, dict):
        return ["$: a trajectory is a JSON object"]
    problems = _model_problems(document)
    if "schema_version" not in document:
        problems.append(f"schema_version: missing (the models default it; write {SCHEMA_VERSION!r} explicitly)")
    elif document["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version: {document['schema_version']!r}, expected {SCHEMA_VERSION!r}")
    for key in ("session_id", "trajectory_id"):
        if key not in document:
            problems.append(f"{key}: missing on the root trajectory")
    _check_trajectory(document, "", problems)
    return problems


def _model_problems(document: dict[str, Any]) -> list[str]:
    try:
        Trajectory.model_validate(document)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            message = error["msg"].removeprefix("Value error, ")
            path = _path(error["loc"])
            problems.append(f"{path}: {message}" if path else message)  # root-level messages name their own path
        return problems
    return []


def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _check_trajectory(trajectory: dict[str, Any], at: str, problems: list[str]) -> None:
    here = f"{at}." if at else ""
    version = trajectory.get("schema_version")
    if at and version is not None and version != SCHEMA_VERSION:
        problems.append(f"{here}schema_version: {version!r} inside an {SCHEMA_VERSION} trajectory")
    steps = trajectory.get("steps")
    if not isinstance(steps, list) or not steps:
        problems.append(f"{here}steps: must hold at least one step")
        steps = []
    subagents = trajectory.get("subagent_trajectories")
    subagents = subagents if isinstance(subagents, list) else []
    embedded = {s.get("trajectory_id") for s in subagents if isinstance(s, dict)}
    for i, step in enumerate(steps):
        if isinstance(step, dict):
            _check_step(step, f"{here}steps[{i}]", embedded, problems)
    final = trajectory.get("final_metrics")
    if isinstance(final, dict) and "total_steps" in final and final["total_steps"] != len(steps) and not trajectory.get("notes"):
        problems.append(f"{here}final_metrics.total_steps: {final['total_steps']} but {len(steps)} steps (explain in `notes`)")
    for i, subagent in enumerate(subagents):
        if isinstance(subagent, dict):
            _check_trajectory(subagent, f"{here}subagent_trajectories[{i}]", problems)


def _check_step(step: dict[str, Any], at: str, embedded: set[Any], problems: list[str]) -> None:
    source = step.get("source")
    if "message" not in step:
        problems.append(f'{at}.message: must be present ("" is allowed)')
    if source == "user" and "observation" in step:
        problems.append(f"{at}.observation: user steps carry no observation")
    if source != "agent":
        # The models accept explicit nulls here; the spec does not.
        problems.extend(f"{at}.{key}: only agent steps carry it" for key in AGENT_ONLY_FIELDS if key in step and step[key] is None)
    if step.get("llm_call_count") == 0:
        problems.extend(f"{at}.{key}: a step with llm_call_count 0 has none" for key in ("metrics", "reasoning_content") if key in step)
    timestamp = step.get("timestamp")
    if isinstance(timestamp, str) and not _has_zone(timestamp):
        problems.append(f"{at}.timestamp: {timestamp!r} has no time zone")
    tool_calls = step.get("tool_calls")
    seen: set[Any] = set()
    for i, tool_call in enumerate(tool_calls if isinstance(tool_calls, list) else []):
        call_id = tool_call.get("tool_call_id") if isinstance(tool_call, dict) else None
        if call_id in seen:
            problems.append(f"{at}.tool_calls[{i}].tool_call_id: {call_id!r} repeats an earlier tool call of this step")
        seen.add(call_id)
    observation = step.get("observation")
    results = observation.get("results") if isinstance(observation, dict) else None
    for i, result in enumerate(results if isinstance(results, list) else []):
        refs = result.get("subagent_trajectory_ref") if isinstance(result, dict) else None
        for j, ref in enumerate(refs if isinstance(refs, list) else []):
            if (
                isinstance(ref, dict)
                and ref.get("trajectory_path") is None
                and ref.get("trajectory_id") is not None
                and ref["trajectory_id"] not in embedded
            ):
                problems.append(
                    f"{at}.observation.results[{i}].subagent_trajectory_ref[{j}]: trajectory_id {ref['trajectory_id']!r} "
                    "matches no trajectory in this trajectory's subagent_trajectories"
                )


def _has_zone(timestamp: str) -> bool:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return True  # not ISO 8601 at all: the models report it
