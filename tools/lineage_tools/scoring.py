"""Scores the pipeline's scope inference against labelled traffic.

A flows file is replayed exactly as `agent-lineage convert` does (offline.read_flows +
offline.replay through a stamping Pipeline), remembering the lineage headers each request would
be stamped with; the decisions are then compared, flow by flow, with the truth beside the file
(`NAME.truth.json`: the real recordings' labels, or the corpus generator's).

Measures (docs/accuracy.md says more):
- session / agent grouping: B-cubed precision, recall and F1 of the predicted session (agent)
  of each request against the true root session (agent); requests whose truth has no session
  (bare SDK calls in sdk_python) are left out;
- parent links: each predicted agent stands for the true agent most of its requests belong to;
  a request's link is right when its predicted parent stands for its true parent (or both are
  none), unknown when a parent exists but none was predicted, wrong otherwise (worse: it routes
  the request under a stranger);
- turn boundaries: F1 of `Scope.new_turn` against `starts_new_turn`, over agent requests;
- side requests: precision and recall of `Scope.side` against `kind == "side"`;
- stamped: the share of LLM requests that get `x-dynamo-session-id`, and every stamp is checked
  against its scope (session header = agent id, parent header = parent id or removed).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_lineage.atif import TrajectoryBuilder
from agent_lineage.harness import load_table
from agent_lineage.lineage import PARENT_HEADER, SESSION_HEADER
from agent_lineage.model import Call, Exchange, Scope
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import Outcome, Pipeline
from agent_lineage.scopes import ScopeTracker
from agent_lineage.settings import Settings


@dataclass(slots=True)
class PRF:
    precision: float
    recall: float
    f1: float


@dataclass(slots=True)
class Prediction:
    """What the pipeline decided for one flow (None everywhere: it was not scoped at all)."""

    scope: Scope | None
    headers: dict[str, str | None] | None  # the lineage headers stamped; None when not an LLM request we read
    # (agent, parent) as Dynamo derives them from the request's harness headers alone; None: no such header
    dynamo: tuple[str, str | None] | None = None


@dataclass
class Score:
    name: str
    requests: int  # flows labelled agent or side
    session: PRF | None  # None: no request has a true session
    agent: PRF | None
    parent_right: int
    parent_wrong: int
    parent_unknown: int
    turn: PRF
    side: PRF
    stamped: int
    llm_requests: int
    inconsistent_stamps: int
    subagent_requests: int = 0  # agent requests with a true parent
    subagent_right: int = 0  # ... whose predicted parent stands for it
    sessions: int = 0  # true root sessions
    sessions_turns_exact: int = 0  # ... whose predicted turn starts are exactly the true ones
    side_requests: int = 0
    side_right: int = 0  # true side requests predicted side, in a session standing for their own
    trajectory_files: int | None = None  # documents the trajectory builder made
    with_ids: int = 0  # agent requests with harness headers Dynamo reads
    with_ids_right: int = 0  # ... whose parent link is right by our scope
    dynamo_right: int = 0  # ... and by Dynamo's own header rule
    mistakes: list[str] = field(default_factory=list)

    @property
    def stamped_share(self) -> float:
        return self.stamped / self.llm_requests if self.llm_requests else 1.0


# -- running the pipeline ----------------------------------------------------------------------


class _StampRecorder(Pipeline):
    """The real pipeline, remembering the outcome (scope and headers) of every request."""

    def __init__(self, settings: Settings, sinks: list) -> None:
        super().__init__(settings, sinks)
        self.outcomes: dict[str, Outcome] = {}

    def request(self, exchange: Exchange) -> Outcome | None:
        outcome = super().request(exchange)
        if outcome is not None:
            self.outcomes[exchange.id] = outcome
        return outcome


class _ScopedCalls:
    """A call sink keeping every emitted call: HEAD probes get their scope only here."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}

    def add(self, call: Call) -> None:
        self.calls[call.exchange_id] = call

    def session_evicted(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def predict(flows_path: str | Path, settings: Settings | None = None) -> list[Prediction]:
    """The pipeline's decision for every flow of the file, in file order."""
    return predict_with_documents(flows_path, settings)[0]


def predict_with_documents(flows_path: str | Path, settings: Settings | None = None) -> tuple[list[Prediction], int]:
    """`predict`, and how many trajectory documents the emitted calls make."""
    flows = read_flows(flows_path)
    sink = _ScopedCalls()
    pipeline = _StampRecorder(settings or Settings(stamp=True), [sink])
    replay(flows, pipeline)
    builder = TrajectoryBuilder()
    for call in sorted(sink.calls.values(), key=lambda c: c.t_end or c.t_start):
        builder.add(call)
    dynamo = ScopeTracker(load_table(), Settings(respect_client_lineage=False))
    predictions = []
    for flow in flows:
        outcome = pipeline.outcomes.get(flow.id)
        call = outcome.call if outcome is not None else sink.calls.get(flow.id)
        headers = outcome.call.headers if outcome is not None else {}
        predictions.append(
            Prediction(
                call.scope if call is not None else None,
                outcome.headers if outcome is not None else None,
                dynamo.lineage_from_headers(headers),
            )
        )
    return predictions, len(builder.session_ids())


# -- measures ------------------------------------------------------------------------------------


def bcubed(pairs: Iterable[tuple[Hashable, Hashable]]) -> PRF:
    """B-cubed precision / recall / F1 of a clustering: one (true cluster, predicted cluster) per item.

    Precision of an item: the share of its predicted cluster that truly belongs with it; recall: the
    share of its true cluster that was predicted with it; both averaged over items.
    """
    pairs = list(pairs)
    if not pairs:
        return PRF(1.0, 1.0, 1.0)
    together = Counter(pairs)
    truth_sizes = Counter(t for t, _ in pairs)
    predicted_sizes = Counter(p for _, p in pairs)
    precision = sum(together[(t, p)] / predicted_sizes[p] for t, p in pairs) / len(pairs)
    recall = sum(together[(t, p)] / truth_sizes[t] for t, p in pairs) / len(pairs)
    return PRF(precision, recall, _f1(precision, recall))


def binary(pairs: Iterable[tuple[bool, bool]]) -> PRF:
    """Precision / recall / F1 of predicted positives, one (truth, predicted) per item; a class
    that is absent on both sides scores 1."""
    counts = Counter(pairs)
    tp, fp, fn = counts[(True, True)], counts[(False, True)], counts[(True, False)]
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return PRF(precision, recall, _f1(precision, recall))


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def majority(pairs: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, Hashable]:
    """Predicted cluster -> the true cluster most of its items belong to (first seen on a tie)."""
    votes: dict[Hashable, Counter] = defaultdict(Counter)
    for truth, predicted in pairs:
        votes[predicted][truth] += 1
    return {predicted: counter.most_common(1)[0][0] for predicted, counter in votes.items()}


def parent_links(rows: list[tuple[Hashable, Hashable | None, str | None, str | None]]) -> tuple[list[str], dict[str, Hashable]]:
    """Judge each agent request's parent link: rows of (true agent, true parent, predicted agent,
    predicted parent); the verdicts (right / wrong / unknown) and the predicted-to-true agent map."""
    stands_for = majority((truth, predicted) for truth, _, predicted, _ in rows if predicted is not None)
    verdicts = []
    for _, true_parent, _, predicted_parent in rows:
        if predicted_parent is None:
            verdicts.append("right" if true_parent is None else "unknown")
        else:
            verdicts.append("right" if stands_for.get(predicted_parent) == true_parent and true_parent is not None else "wrong")
    return verdicts, stands_for


def score(name: str, labels: list[dict[str, Any]], predictions: list[Prediction]) -> Score:
    """Compare predictions with the truth, flow by flow (both in file order)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{name}: {len(labels)} labelled flows but {len(predictions)} flows in the file")
    scored = [(label, p) for label, p in zip(labels, predictions) if label["kind"] in ("agent", "side")]
    rooted = [(label, p) for label, p in scored if label["root_session_id"] is not None]
    agents = [(label, p) for label, p in scored if label["kind"] == "agent"]

    def predicted(p: Prediction, attribute: str, label: dict[str, Any]) -> Hashable:
        # An unscoped flow is a cluster of its own.
        return getattr(p.scope, attribute) if p.scope is not None else ("unscoped", label["index"])

    session_pairs = [(label["root_session_id"], predicted(p, "session_id", label)) for label, p in rooted]
    agent_pairs = [
        ((label["root_session_id"], label["agent_id"]), predicted(p, "agent_id", label)) for label, p in rooted if label["kind"] == "agent"
    ]
    rows = [
        (
            (label["root_session_id"], label["agent_id"]),
            (label["root_session_id"], label["parent_agent_id"]) if label["parent_agent_id"] is not None else None,
            p.scope.agent_id if p.scope else None,
            p.scope.parent_id if p.scope else None,
        )
        for label, p in agents
    ]
    verdicts, stands_for = parent_links(rows)
    subagents = [v for v, (label, _) in zip(verdicts, agents) if label["parent_agent_id"] is not None]
    with_ids = [i for i, (_, p) in enumerate(agents) if p.dynamo is not None]
    dynamo_rows = [(rows[i][0], rows[i][1], agents[i][1].dynamo[0], agents[i][1].dynamo[1]) for i in with_ids]  # type: ignore[index]
    dynamo_verdicts, _ = parent_links(dynamo_rows)
    session_of = majority(session_pairs)
    sides = [(label, p) for label, p in rooted if label["kind"] == "side"]
    side_right = sum(
        1 for label, p in sides if p.scope is not None and p.scope.side and session_of.get(p.scope.session_id) == label["root_session_id"]
    )
    true_starts: dict[Hashable, set[int]] = defaultdict(set)
    predicted_starts: dict[Hashable, set[int]] = defaultdict(set)
    for label, p in agents:
        if label["root_session_id"] is None:
            continue
        true_starts[label["root_session_id"]]  # every session counts, even one without a turn start
        if label["starts_new_turn"]:
            true_starts[label["root_session_id"]].add(label["index"])
        if p.scope is not None and p.scope.new_turn:
            predicted_starts[label["root_session_id"]].add(label["index"])
    turn = binary((label["starts_new_turn"], bool(p.scope and p.scope.new_turn)) for label, p in agents)
    side = binary((label["kind"] == "side", bool(p.scope and p.scope.side)) for label, p in scored)
    llm = [(label, p) for label, p in scored if label["method"] == "POST"]
    stamped = sum(1 for _, p in llm if p.headers and p.headers.get(SESSION_HEADER))
    inconsistent = sum(1 for _, p in llm if p.headers is not None and not _stamp_matches_scope(p))
    return Score(
        name=name,
        requests=len(scored),
        session=bcubed(session_pairs) if session_pairs else None,
        agent=bcubed(agent_pairs) if agent_pairs else None,
        parent_right=verdicts.count("right"),
        parent_wrong=verdicts.count("wrong"),
        parent_unknown=verdicts.count("unknown"),
        turn=turn,
        side=side,
        stamped=stamped,
        llm_requests=len(llm),
        inconsistent_stamps=inconsistent,
        subagent_requests=len(subagents),
        subagent_right=subagents.count("right"),
        sessions=len(true_starts),
        sessions_turns_exact=sum(1 for root, starts in true_starts.items() if predicted_starts.get(root, set()) == starts),
        side_requests=len(sides),
        side_right=side_right,
        with_ids=len(with_ids),
        with_ids_right=sum(1 for i in with_ids if verdicts[i] == "right"),
        dynamo_right=dynamo_verdicts.count("right"),
        mistakes=_mistakes(scored, rooted, agents, verdicts, stands_for),
    )


def _stamp_matches_scope(p: Prediction) -> bool:
    """The stamp is the lineage rule applied to the scope: session = agent, parent = parent or removed.

    A request stamped with no session (a side request whose session was unknown when it was
    sent; it shows in the stamped share) must at least have any parent header removed.
    """
    headers = p.headers or {}
    if not headers.get(SESSION_HEADER):
        return PARENT_HEADER in headers and headers[PARENT_HEADER] is None
    return (
        p.scope is not None
        and headers.get(SESSION_HEADER) == p.scope.agent_id
        and PARENT_HEADER in headers
        and headers[PARENT_HEADER] == p.scope.parent_id
    )


Labelled = list[tuple[dict[str, Any], Prediction]]


def _mistakes(scored: Labelled, rooted: Labelled, agents: Labelled, verdicts: list[str], stands_for: dict[Hashable, Hashable]) -> list[str]:
    """One entry per wrongly decided flow, with the evidence the tracker recorded: where to look first.

    A request is merged away when its predicted cluster stands for another true one, split off when
    it is not in the predicted cluster holding most of its true one.
    """
    session_pairs = [(label["root_session_id"], p.scope.session_id) for label, p in rooted if p.scope]
    session_of = majority(session_pairs)
    main_session = majority((predicted, truth) for truth, predicted in session_pairs)
    agent_pairs = [
        ((label["root_session_id"], label["agent_id"]), p.scope.agent_id) for label, p in rooted if p.scope and label["kind"] == "agent"
    ]
    main_agent = majority((predicted, truth) for truth, predicted in agent_pairs)
    lines = []
    verdict_of = {label["index"]: v for (label, _), v in zip(agents, verdicts)}
    for label, p in scored:
        scope = p.scope
        problems = []
        if scope is None:
            problems.append("not scoped")
        else:
            root = label["root_session_id"]
            if root is not None and session_of.get(scope.session_id) != root:
                problems.append("session merged away")
            elif root is not None and main_session.get(root) != scope.session_id:
                problems.append("session split off")
            agent = (root, label["agent_id"])
            if label["kind"] == "agent" and root is not None and stands_for.get(scope.agent_id) != agent:
                problems.append("agent merged away")
            elif label["kind"] == "agent" and root is not None and main_agent.get(agent) != scope.agent_id:
                problems.append("agent split off")
            if verdict_of.get(label["index"], "right") != "right":
                problems.append(f"parent {verdict_of[label['index']]}")
            if label["kind"] == "agent" and label["starts_new_turn"] != scope.new_turn:
                problems.append("turn start" if label["starts_new_turn"] else "false turn start")
            if (label["kind"] == "side") != bool(scope.side):
                problems.append("side missed" if label["kind"] == "side" else "false side")
        if p.headers is not None and not _stamp_matches_scope(p):
            problems.append(f"stamped {p.headers}")
        if problems:
            truth = f"{label['kind']} root={label['root_session_id']} agent={label['agent_id']} parent={label['parent_agent_id']} new_turn={label['starts_new_turn']}"  # noqa: E501
            guess = (
                "-"
                if scope is None
                else f"session={scope.session_id} agent={scope.agent_id} parent={scope.parent_id} new_turn={scope.new_turn} side={scope.side} evidence={scope.evidence}"  # noqa: E501
            )
            lines.append(
                f"#{label['index']} {label['method']} {label['path']}: {', '.join(problems)}\n    truth: {truth}\n    got:   {guess}"
            )
    return lines


def load_truth(flows_path: str | Path) -> dict[str, Any]:
    path = Path(flows_path)
    return json.loads(path.with_name(path.name.removesuffix(".mitm") + ".truth.json").read_text())


def score_file(flows_path: str | Path, settings: Settings | None = None) -> Score:
    truth = load_truth(flows_path)
    predictions, documents = predict_with_documents(flows_path, settings)
    result = score(Path(flows_path).name.removesuffix(".mitm"), truth["flows"], predictions)
    result.trajectory_files = documents
    return result


# -- targets -------------------------------------------------------------------------------------

EXACT = "exact"  # harness ids on the wire (and the real recordings): every measure 100%
INFERRED = "inferred"  # no ids: session and turn F1 >= 0.99, no wrong parent link
IDLESS = "idless"  # the real id-less recordings: session F1 >= 0.99, every subagent's parent right
MIN_INFERRED_F1 = 0.99


def target_for(truth: dict[str, Any], flows_path: str | Path) -> str:
    """Which target a file is held to: by its generator settings, or by its fixture directory."""
    generator = truth.get("generator")
    if generator is not None:
        return INFERRED if generator["strip_ids"] or truth["client"] == "sdk" else EXACT
    return IDLESS if Path(flows_path).parent.name == "idless" else EXACT


def misses(result: Score, target: str) -> list[str]:
    """The measures of `result` that fall short of `target`, as readable lines (empty: all met)."""
    found = []

    def at_least(what: str, value: float | None, floor: float) -> None:
        if value is not None and value < floor - 1e-12:
            found.append(f"{result.name}: {what} {value:.4f} < {floor}")

    if target == EXACT:
        for what, prf in (("session", result.session), ("agent", result.agent), ("turn", result.turn), ("side", result.side)):
            if prf is not None:
                at_least(f"{what} precision", prf.precision, 1.0)
                at_least(f"{what} recall", prf.recall, 1.0)
        at_least("stamped share", result.stamped_share, 1.0)
        if result.parent_wrong or result.parent_unknown:
            found.append(f"{result.name}: parent links wrong={result.parent_wrong} unknown={result.parent_unknown}")
    else:
        at_least("session F1", result.session.f1 if result.session else None, MIN_INFERRED_F1)
        if target == INFERRED:
            at_least("turn F1", result.turn.f1, MIN_INFERRED_F1)
            if result.parent_wrong:
                found.append(f"{result.name}: {result.parent_wrong} wrong parent links")
        elif result.parent_wrong or result.parent_unknown:
            found.append(f"{result.name}: parent links wrong={result.parent_wrong} unknown={result.parent_unknown}")
    if result.with_ids_right < result.dynamo_right:
        found.append(f"{result.name}: worse than Dynamo's header rule: {result.with_ids_right} < {result.dynamo_right} parents right")
    if result.trajectory_files is not None and result.sessions and result.trajectory_files != result.sessions:
        found.append(f"{result.name}: {result.trajectory_files} trajectory files for {result.sessions} root sessions")
    if result.inconsistent_stamps:
        found.append(f"{result.name}: {result.inconsistent_stamps} stamps disagree with their scope")
    return found


# -- tables ---------------------------------------------------------------------------------------

COLUMNS = ("requests", "sess P", "sess R", "sess F1", "agent F1", "parent r/w/u", "turn F1", "side P", "side R", "stamped")


def row(result: Score) -> list[str]:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return [
        str(result.requests),
        number(result.session.precision if result.session else None),
        number(result.session.recall if result.session else None),
        number(result.session.f1 if result.session else None),
        number(result.agent.f1 if result.agent else None),
        f"{result.parent_right}/{result.parent_wrong}/{result.parent_unknown}",
        number(result.turn.f1),
        number(result.side.precision),
        number(result.side.recall),
        f"{100 * result.stamped_share:.1f}%",
    ]


ISSUE_COLUMNS = (
    "requests",
    "session F1",
    "subagent parent right",
    "wrong links",
    "turns exact",
    "side right",
    "files / root sessions",
    "ids: ours / Dynamo",
)


def issue_row(result: Score) -> list[str]:
    """The measures of the one accuracy table (docs/accuracy.md)."""
    return [
        str(result.requests),
        "-" if result.session is None else f"{result.session.f1:.3f}",
        f"{result.subagent_right}/{result.subagent_requests}",
        str(result.parent_wrong),
        f"{result.sessions_turns_exact}/{result.sessions}",
        f"{result.side_right}/{result.side_requests}",
        f"{result.trajectory_files}/{result.sessions}",
        f"{result.with_ids_right}/{result.dynamo_right} of {result.with_ids}" if result.with_ids else "-",
    ]


def format_table(head: list[str], rows: list[list[str]]) -> str:
    """Aligned plain-text columns: text left, numbers right."""
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell == "-")
