// agent-lineage viewer: renders the trajectories embedded in this page (see viewer.py).
// Every node is built with createElement/textContent: trajectory text is never parsed as HTML.
// The step list is virtualised (only the rows in view exist), details are built on expand.
"use strict";
(function () {
  const LABEL_WIDTH = 300; // px, the lane labels column
  const ROW_OVERSCAN = 12;
  const TEXT_PREVIEW = 20000; // characters of a long text shown before "show all"
  const app = document.getElementById("app");
  const index = JSON.parse(document.getElementById("index").textContent);
  const models = new Map(); // session number -> model, parsed on first view

  // -- small helpers ------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function append(parent, ...children) {
    for (const child of children) if (child) parent.appendChild(child);
    return parent;
  }

  function lineage(object) {
    return (object && object.extra && object.extra.agent_lineage) || {};
  }

  function shortId(id) {
    const text = String(id || "");
    return text.length > 12 ? text.slice(0, 8) + "…" : text;
  }

  function fmtInt(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function fmtDuration(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    const minutes = Math.floor(ms / 60000);
    return minutes + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function fmtClock(ms) {
    return typeof ms === "number" && isFinite(ms) ? new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC") : "–";
  }

  function percent(part, whole) {
    return typeof part === "number" && typeof whole === "number" && whole > 0 ? Math.round((100 * part) / whole) + "%" : "–";
  }

  // Text of an ATIF message or observation content: a string, or a list of content parts.
  function textOf(value) {
    if (value === undefined || value === null) return "";
    if (typeof value === "string") return value;
    if (Array.isArray(value)) {
      return value
        .map((part) => {
          if (typeof part === "string") return part;
          if (part && typeof part.text === "string") return part.text;
          if (part && part.type === "image") return "[image]";
          return JSON.stringify(part);
        })
        .join("\n");
    }
    return JSON.stringify(value, null, 2);
  }

  function firstLine(text, limit) {
    const head = text.slice(0, limit * 4);
    const line = head.split("\n").find((l) => l.trim()) || "";
    return line.length > limit ? line.slice(0, limit) + "…" : line;
  }

  function prettyJson(value) {
    if (typeof value === "string") {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch (e) {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  }

  // A <pre> of a text that may be huge: the first TEXT_PREVIEW characters, then a button.
  function textBlock(text, className) {
    const block = el("div", "text-block " + (className || ""));
    const pre = el("pre");
    block.appendChild(pre);
    if (text.length <= TEXT_PREVIEW) {
      pre.textContent = text;
      return block;
    }
    pre.textContent = text.slice(0, TEXT_PREVIEW);
    const more = el("button", "more", "show all " + fmtInt(text.length) + " characters");
    more.addEventListener("click", (event) => {
      event.stopPropagation();
      pre.textContent = text;
      more.remove();
      block.dispatchEvent(new CustomEvent("resized", { bubbles: true }));
    });
    block.appendChild(more);
    return block;
  }

  function keyValues(pairs) {
    const table = el("table", "kv");
    for (const [key, value] of pairs) {
      if (value === undefined || value === null || value === "") continue;
      const row = el("tr");
      append(row, el("th", null, key), el("td", null, typeof value === "object" ? JSON.stringify(value) : value));
      table.appendChild(row);
    }
    return table.rows.length ? table : null;
  }

  function section(title, ...children) {
    const box = el("section", "detail-section");
    box.appendChild(el("h4", null, title));
    append(box, ...children);
    return box;
  }

  // -- the model of one session ---------------------------------------------------------------

  // reuse: the KV figures viewer.py computed per agent id and step id (step_reuse).
  function buildModel(document_, number, reuse) {
    const rootLineage = lineage(document_);
    const agentInfo = rootLineage.agents || {};
    const agents = [];
    const byId = new Map();
    const steps = [];

    function visit(trajectory, parent, depth) {
      const id = String(trajectory.trajectory_id || (parent ? parent.id + "/" + (parent.children.length + 1) : document_.session_id || "session"));
      const info = agentInfo[id] || {};
      const agent = {
        id,
        trajectory,
        parent,
        depth,
        children: [],
        steps: [],
        info,
        index: agents.length,
        name: (trajectory.agent && trajectory.agent.name) || "agent",
        parentToolCallId: trajectory.agent && trajectory.agent.extra ? trajectory.agent.extra.parent_tool_call_id : null,
      };
      agent.color = "hsl(" + ((agent.index * 137.508 + 210) % 360).toFixed(0) + " 62% 48%)";
      agents.push(agent);
      byId.set(id, agent);
      if (parent) parent.children.push(agent);
      const kvSteps = reuse.steps[trajectory.trajectory_id === undefined ? "" : String(trajectory.trajectory_id)] || {};
      for (const raw of trajectory.steps || []) {
        const metrics = raw.metrics || {};
        const metricsExtra = metrics.extra || {};
        const step = {
          raw,
          agent,
          seq: steps.length,
          source: raw.source || "?",
          t: Date.parse(raw.timestamp),
          latency: typeof metricsExtra.latency_ms === "number" ? metricsExtra.latency_ms : null,
          ttft: typeof metricsExtra.ttft_ms === "number" ? metricsExtra.ttft_ms : null,
          turn: typeof lineage(raw).turn === "number" ? lineage(raw).turn : null,
          placeholder: lineage(raw).no_agent_calls === true,
          kv: kvSteps[String(raw.step_id)] || null,
        };
        const error = lineage(raw).error || (lineage(raw).status >= 400 ? "HTTP " + lineage(raw).status : null);
        step.error = error || null;
        agent.steps.push(step);
        steps.push(step);
      }
      for (const sub of trajectory.subagent_trajectories || []) if (sub && typeof sub === "object") visit(sub, agent, depth + 1);
    }
    visit(document_, null, 0);

    for (const agent of agents) agent.firstCall = agent.steps.find((s) => s.source === "agent" && !s.placeholder) || null;

    // Steps without a timestamp take their predecessor's; a trajectory with none is laid out by order.
    const timed = steps.some((s) => isFinite(s.t));
    for (const agent of agents) {
      let last = NaN;
      for (const step of agent.steps) {
        if (!timed) step.t = step.seq * 1000;
        else if (!isFinite(step.t)) step.t = last;
        last = step.t;
      }
    }
    const firstTime = least(steps.map((s) => s.t).filter(isFinite), 0);
    for (const step of steps) if (!isFinite(step.t)) step.t = firstTime;
    for (const step of steps) step.end = step.t + (step.latency || (timed ? 0 : 800));

    // Subagents' labels: the task their parent's delegating tool call gave them.
    const toolCalls = new Map(); // tool call id -> {step, call}
    for (const step of steps) for (const call of step.raw.tool_calls || []) toolCalls.set(call.tool_call_id, { step, call });
    for (const agent of agents) {
      if (!agent.parent) {
        agent.label = "main";
        continue;
      }
      let delegating = agent.parentToolCallId ? toolCalls.get(agent.parentToolCallId) : null;
      if (!delegating) {
        for (const step of agent.parent.steps)
          for (const result of (step.raw.observation && step.raw.observation.results) || [])
            for (const ref of refsOf(result))
              if (ref.trajectory_id === agent.id && toolCalls.has(result.source_call_id)) delegating = toolCalls.get(result.source_call_id);
      }
      agent.delegating = delegating;
      const args = delegating ? parsedArguments(delegating.call.arguments) : null;
      // Claude Code's Agent/Task give a short description; Codex's spawn_agent and agents-as-tools a message.
      const task = args ? [args.description, args.message, args.prompt, args.input, args.task].find((v) => typeof v === "string" && v.trim()) : null;
      agent.label = task ? firstLine(task, 40) : delegating ? delegating.call.function_name : "subagent " + agent.index;
    }

    // Turns: ours are in the steps' extra; otherwise each user step of the main agent opens one.
    const ordered = steps.slice().sort((a, b) => a.t - b.t || a.seq - b.seq);
    const haveTurns = steps.some((s) => s.turn !== null);
    let turn = haveTurns ? null : 0;
    for (const step of ordered) {
      if (haveTurns) {
        if (step.turn === null) step.turn = turn === null ? 1 : turn;
        turn = step.turn;
      } else {
        if ((step.source === "user" && step.agent.depth === 0) || turn === 0) turn += 1;
        step.turn = turn;
      }
    }
    const turns = new Map();
    for (const step of ordered) {
      if (!turns.has(step.turn)) turns.set(step.turn, []);
      turns.get(step.turn).push(step);
    }

    const sides = (rootLineage.side_requests || []).map((raw, i) => ({ raw, i, t: Date.parse(raw.timestamp), agent: byId.get(raw.agent_id) }));
    const times = steps.map((s) => s.t).concat(steps.map((s) => s.end), sides.map((s) => s.t).filter(isFinite));
    const start = least(times, 0);
    const end = Math.max(greatest(times, start), start + 1);
    return { number, document: document_, rootLineage, agents, byId, steps, turns, sides, start, end, timed, toolCalls, reuse };
  }

  // ATIF 1.7 lists a result's subagent refs; a producer may give one object instead.
  function refsOf(result) {
    const refs = result.subagent_trajectory_ref;
    return Array.isArray(refs) ? refs : refs && typeof refs === "object" ? [refs] : [];
  }

  // Math.min(...values) runs out of stack on very long arrays.
  function least(values, fallback) {
    let found = Infinity;
    for (const value of values) if (value < found) found = value;
    return found === Infinity ? fallback : found;
  }

  function greatest(values, fallback) {
    let found = -Infinity;
    for (const value of values) if (value > found) found = value;
    return found === -Infinity ? fallback : found;
  }

  function parsedArguments(value) {
    if (value && typeof value === "object") return value;
    if (typeof value === "string") {
      try {
        const parsed = JSON.parse(value);
        return parsed && typeof parsed === "object" ? parsed : null;
      } catch (e) {
        return null;
      }
    }
    return null;
  }

  function agentPath(agent) {
    const names = [];
    for (let node = agent; node; node = node.parent) names.unshift(node.label);
    return names.join(" › ");
  }

  // -- index page ------------------------------------------------------------------------------

  function showIndex() {
    document.title = "agent-lineage: " + index.length + " sessions";
    const page = el("div", "index-page");
    append(page, el("h1", null, "Sessions"), el("p", "muted", index.length + " trajectories, by start time"));
    const table = el("table", "index");
    const head = el("tr");
    for (const title of ["start", "duration", "agent", "model", "session", "agents", "LLM calls", "turns", "side", "tokens in", "cached", "out", "file"])
      head.appendChild(el("th", null, title));
    table.appendChild(head);
    const order = index.map((row, number) => ({ row, number })).sort((a, b) => (a.row.start || 0) - (b.row.start || 0));
    for (const { row, number } of order) {
      const tr = el("tr", "session-row");
      tr.dataset.session = number;
      const link = el("a", null, shortId(row.session_id) || "(no id)");
      link.href = "#session-" + number;
      link.title = row.session_id;
      const cells = [
        row.start === null ? "–" : fmtClock(row.start * 1000),
        row.end !== null && row.start !== null ? fmtDuration((row.end - row.start) * 1000) : "–",
        row.agent,
        row.model,
        link,
        fmtInt(row.agents),
        fmtInt(row.llm_calls),
        row.turns === null ? "–" : fmtInt(row.turns),
        fmtInt(row.side_requests),
        fmtInt(row.prompt_tokens),
        percent(row.cached_tokens, row.prompt_tokens),
        fmtInt(row.completion_tokens),
        row.file,
      ];
      for (const cell of cells) {
        const td = el("td");
        if (cell instanceof Node) td.appendChild(cell);
        else td.textContent = cell;
        tr.appendChild(td);
      }
      tr.addEventListener("click", (event) => {
        if (event.target.tagName !== "A") location.hash = "#session-" + number;
      });
      table.appendChild(tr);
    }
    page.appendChild(append(el("div", "index-scroller"), table));
    app.replaceChildren(page);
  }

  // -- session page ----------------------------------------------------------------------------

  function showSession(number) {
    if (!models.has(number)) {
      const text = document.getElementById("session-" + number).textContent;
      const reuse = JSON.parse(document.getElementById("reuse-" + number).textContent);
      models.set(number, buildModel(JSON.parse(text), number, reuse));
    }
    const model = models.get(number);
    const summary = index[number];
    document.title = "agent-lineage: " + (model.document.session_id || summary.file);
    const page = el("div", "session-page");
    page.appendChild(header(model, summary));
    const timeline = new Timeline(model);
    page.appendChild(timeline.node);
    const tools = el("div", "list-tools");
    page.appendChild(tools);
    const list = el("div", "steps");
    page.appendChild(list);
    app.replaceChildren(page);
    const steps = new StepList(list, model);
    timeline.onSelect = (step) => steps.reveal(step);
    timeline.onSelectSide = (side) => steps.reveal(side);
    steps.onSelect = (step) => timeline.highlight(step);
    filterControls(tools, model, steps, timeline);
    document.onkeydown = (event) => keyboard(event, steps);
    timeline.layout();
    performance.mark("viewer-ready");
  }

  // j / k (or the arrow keys) move through the steps, Enter or o opens and closes one, / filters.
  function keyboard(event, steps) {
    if (event.target.closest && event.target.closest("input, select, textarea, button") && event.key !== "Escape") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 };
    if (event.key in actions) steps.move(actions[event.key]);
    else if ((event.key === "Enter" || event.key === "o") && steps.selected) steps.toggle(steps.selected);
    else if (event.key === "/") document.querySelector(".list-tools .search").focus();
    else if (event.key === "Escape" && event.target.blur) event.target.blur();
    else return;
    event.preventDefault();
  }

  // Text, agent and errors-only filters over the step list; a click on a lane's label picks its agent.
  function filterControls(box, model, steps, timeline) {
    const search = el("input", "search");
    search.type = "search";
    search.placeholder = "filter steps: text, tool, id, evidence…";
    const agents = el("select", "agent-filter");
    agents.appendChild(el("option", null, "all agents")).value = "";
    for (const agent of model.agents) agents.appendChild(el("option", null, "\u00a0".repeat(2 * agent.depth) + agent.label + " · " + shortId(agent.id))).value = agent.index;
    const errorsOnly = el("input");
    errorsOnly.type = "checkbox";
    const errorsLabel = el("label", "errors-only");
    append(errorsLabel, errorsOnly, document.createTextNode(" errors only"));
    const count = el("span", "muted shown-count");
    const total = model.steps.length;
    const apply = () => {
      steps.filter({ agent: agents.value === "" ? null : model.agents[Number(agents.value)], text: search.value, errors: errorsOnly.checked });
      count.textContent = steps.shownSteps === total ? total + " steps" : steps.shownSteps + " of " + total + " steps";
    };
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(apply, 150);
    });
    agents.addEventListener("change", apply);
    errorsOnly.addEventListener("change", apply);
    timeline.onPickAgent = (agent) => {
      agents.value = agents.value === String(agent.index) ? "" : agent.index;
      apply();
    };
    steps.onFilterCleared = () => {
      search.value = "";
      agents.value = "";
      errorsOnly.checked = false;
      count.textContent = total + " steps";
    };
    count.textContent = total + " steps";
    append(box, search, agents, errorsLabel, count, el("span", "muted keys", "j / k move · Enter opens · / filters"));
  }

  function header(model, summary) {
    const doc = model.document;
    const agent = doc.agent || {};
    const metrics = doc.final_metrics || {};
    const box = el("header", "session-header");
    const title = el("div", "title-line");
    if (index.length > 1) {
      const back = el("a", "back", "← sessions");
      back.href = "#";
      title.appendChild(back);
    }
    append(
      title,
      el("h1", null, [agent.name, agent.version && agent.version !== "unknown" ? agent.version : null].filter(Boolean).join(" ")),
      el("span", "muted", agent.model_name || ""),
      el("span", "session-id", doc.session_id || "")
    );
    box.appendChild(title);
    const subs = model.agents.length - 1;
    const facts = [
      ["start", fmtClock(model.start)],
      ["duration", fmtDuration(model.end - model.start)],
      ["agents", model.agents.length + (subs ? " (" + subs + " sub)" : "")],
      ["LLM calls", fmtInt(model.steps.filter((s) => s.source === "agent" && !s.placeholder).length)],
      ["turns", fmtInt(model.turns.size)],
      ["side requests", fmtInt(model.sides.length)],
      ["tokens in", fmtInt(metrics.total_prompt_tokens)],
      ["cached", percent(metrics.total_cached_tokens, metrics.total_prompt_tokens)],
      ["out", fmtInt(metrics.total_completion_tokens)],
      ["file", summary.file],
    ];
    if (model.rootLineage.continues) facts.push(["continues", sessionLink(model.rootLineage.continues)]);
    if (doc.continued_trajectory_ref) facts.push(["continued in", sessionLink(doc.continued_trajectory_ref)]);
    const unmatched = (model.rootLineage.unmatched_tool_results || []).length;
    if (unmatched) facts.push(["unmatched tool results", fmtInt(unmatched)]);
    const line = el("div", "facts");
    for (const [key, value] of facts) {
      const fact = el("span", "fact");
      const shown = el("span", "fact-value");
      if (value instanceof Node) shown.appendChild(value);
      else shown.textContent = value;
      append(fact, el("span", "fact-key", key), shown);
      line.appendChild(fact);
    }
    box.appendChild(line);
    if (!model.timed) box.appendChild(el("p", "muted", "No timestamps in this trajectory: calls are laid out in order."));
    return box;
  }

  // Another part of the same session (a file name): a link when that file is on this page.
  function sessionLink(file) {
    const number = index.findIndex((row) => row.file === file);
    if (number < 0) return String(file);
    const link = el("a", "session-link", file);
    link.href = "#session-" + number;
    return link;
  }

  // -- timeline: one lane per agent, subagents' lanes nested in their parent's -----------------

  class Timeline {
    constructor(model) {
      this.model = model;
      this.zoom = 1;
      this.bars = new Map(); // step -> bar element
      this.node = el("div", "timeline");
      const tools = el("div", "timeline-tools");
      const zoomOut = el("button", null, "−");
      const zoomIn = el("button", null, "+");
      const fit = el("button", null, "fit");
      zoomOut.title = "zoom out";
      zoomIn.title = "zoom in (or ctrl + wheel)";
      zoomOut.addEventListener("click", () => this.setZoom(this.zoom / 2));
      zoomIn.addEventListener("click", () => this.setZoom(this.zoom * 2));
      fit.addEventListener("click", () => this.setZoom(1));
      append(tools, el("span", "muted", "timeline"), zoomOut, zoomIn, fit, this.legend());
      this.node.appendChild(tools);
      this.scroller = el("div", "lanes-scroller");
      this.lanes = el("div", "lanes");
      this.axis = el("div", "axis");
      this.lanes.appendChild(this.axis);
      this.overlay = el("div", "turn-lines");
      this.lanes.appendChild(this.overlay);
      this.tracks = [];
      const root = model.agents[0];
      this.lanes.appendChild(this.lane(root));
      if (model.sides.length) this.lanes.appendChild(this.sideLane());
      this.scroller.appendChild(this.lanes);
      this.node.appendChild(this.scroller);
      this.scroller.addEventListener(
        "wheel",
        (event) => {
          if (!event.ctrlKey) return;
          event.preventDefault();
          this.setZoom(this.zoom * (event.deltaY < 0 ? 1.25 : 0.8), event.clientX);
        },
        { passive: false }
      );
      new ResizeObserver(() => this.layout()).observe(this.scroller);
    }

    legend() {
      const box = el("span", "legend");
      append(box, el("span", "swatch ttft-swatch"), el("span", null, "waiting for first token"), el("span", "swatch call-swatch"), el("span", null, "streaming"));
      append(box, el("span", "swatch error-swatch"), el("span", null, "error"), el("span", "swatch side-swatch"), el("span", null, "side request"));
      return box;
    }

    // Percent of the track; a small margin on both sides keeps the first and last bars whole.
    x(t) {
      return 0.5 + (98 * (t - this.model.start)) / (this.model.end - this.model.start);
    }

    width(duration) {
      return (98 * duration) / (this.model.end - this.model.start);
    }

    lane(agent) {
      const lane = el("div", "lane");
      lane.dataset.agentId = agent.id;
      lane.dataset.depth = agent.depth;
      const row = el("div", "lane-row");
      const label = el("div", "lane-label");
      label.style.paddingLeft = 8 + agent.depth * 16 + "px";
      const dot = el("span", "dot");
      dot.style.background = agent.color;
      const calls = agent.steps.filter((s) => s.source === "agent" && !s.placeholder).length;
      append(label, dot, el("span", "lane-name", agent.label), el("span", "lane-id", shortId(agent.id)), el("span", "lane-count", calls + (calls === 1 ? " call" : " calls")));
      const evidence = agent.info.evidence ? Object.entries(agent.info.evidence).map(([k, v]) => k + ": " + v).join("\n") : "";
      label.addEventListener("click", () => this.onPickAgent && this.onPickAgent(agent));
      label.title = agentPath(agent) + "\nagent " + agent.id + (agent.parent ? "\nparent " + agent.parent.id : "") + (evidence ? "\n\nevidence\n" + evidence : "") + "\n\nclick: show only this agent's steps";
      const track = el("div", "lane-track");
      for (const step of agent.steps) {
        if (step.source !== "agent" || step.placeholder) continue;
        const bar = el("div", "call" + (step.error ? " error" : ""));
        bar.style.left = this.x(step.t) + "%";
        bar.style.width = this.width(step.end - step.t) + "%";
        if (step.ttft !== null && step.latency) {
          const wait = el("span", "ttft");
          wait.style.width = Math.min(100, (100 * step.ttft) / step.latency) + "%";
          bar.appendChild(wait);
        }
        bar.style.setProperty("--agent", agent.color);
        bar.title = callTitle(step);
        bar.addEventListener("click", () => this.onSelect && this.onSelect(step));
        this.bars.set(step, bar);
        track.appendChild(bar);
      }
      this.tracks.push(track);
      append(row, label, track);
      lane.appendChild(row);
      const children = el("div", "lane-children");
      for (const child of agent.children) children.appendChild(this.lane(child));
      lane.appendChild(children);
      return lane;
    }

    sideLane() {
      const lane = el("div", "lane side-lane");
      const row = el("div", "lane-row");
      const label = el("div", "lane-label");
      append(label, el("span", "dot side-dot"), el("span", "lane-name", "side requests"), el("span", "lane-count", String(this.model.sides.length)));
      const track = el("div", "lane-track");
      for (const side of this.model.sides) {
        if (!isFinite(side.t)) continue;
        const mark = el("div", "side-mark");
        mark.style.left = this.x(side.t) + "%";
        mark.title = [side.raw.kind, side.raw.api, side.raw.path, side.raw.model, side.agent ? "of " + agentPath(side.agent) : ""].filter(Boolean).join("  ");
        mark.addEventListener("click", () => this.onSelectSide && this.onSelectSide(side));
        track.appendChild(mark);
      }
      this.tracks.push(track);
      append(row, label, track);
      lane.appendChild(row);
      return lane;
    }

    setZoom(zoom, anchorX) {
      const old = this.zoom;
      this.zoom = Math.min(4096, Math.max(1, zoom));
      const anchor = anchorX === undefined ? this.scroller.clientWidth / 2 : anchorX - this.scroller.getBoundingClientRect().left;
      const along = this.scroller.scrollLeft + anchor - LABEL_WIDTH;
      this.layout();
      this.scroller.scrollLeft = Math.max(0, (along * this.zoom) / old - anchor + LABEL_WIDTH);
    }

    layout() {
      const width = Math.max(200, this.scroller.clientWidth - LABEL_WIDTH - 2) * this.zoom;
      if (width === this.width) return;
      this.width = width;
      for (const track of this.tracks) track.style.width = width + "px";
      this.lanes.style.width = width + LABEL_WIDTH + "px";
      this.overlay.style.width = width + "px";
      this.axis.replaceChildren(el("div", "axis-label"));
      this.axis.style.width = width + LABEL_WIDTH + "px";
      const span = this.model.end - this.model.start;
      const tick = niceStep(span / Math.max(2, width / 110));
      const ticks = el("div", "axis-ticks");
      ticks.style.width = width + "px";
      for (let t = 0; t <= span; t += tick) {
        const mark = el("span", "tick", this.model.timed ? "+" + fmtDuration(t) : "#" + Math.round(t / 1000));
        mark.style.left = this.x(this.model.start + t) + "%";
        ticks.appendChild(mark);
      }
      this.overlay.replaceChildren();
      for (const [turn, steps] of this.model.turns) {
        const line = el("div", "turn-line");
        line.style.left = this.x(steps[0].t) + "%";
        this.overlay.appendChild(line);
        const label = el("span", "turn-tick", "turn " + turn);
        label.style.left = line.style.left;
        ticks.appendChild(label);
      }
      this.axis.appendChild(ticks);
    }

    highlight(step) {
      if (this.selected) this.selected.classList.remove("selected");
      this.selected = this.bars.get(step) || null;
      if (!this.selected) return;
      this.selected.classList.add("selected");
      const box = this.selected.getBoundingClientRect();
      const view = this.scroller.getBoundingClientRect();
      if (box.left < view.left + LABEL_WIDTH || box.right > view.right) this.scroller.scrollLeft += box.left - view.left - LABEL_WIDTH - 40;
    }
  }

  function niceStep(raw) {
    const power = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
    for (const factor of [1, 2, 5, 10]) if (raw <= factor * power) return factor * power;
    return 10 * power;
  }

  function callTitle(step) {
    const raw = step.raw;
    const metrics = raw.metrics || {};
    const tools = (raw.tool_calls || []).map((c) => c.function_name).join(", ");
    return [
      agentPath(step.agent) + " · step " + raw.step_id,
      fmtClock(step.t),
      "latency " + fmtDuration(step.latency) + (step.ttft !== null ? ", first token " + fmtDuration(step.ttft) : ""),
      "tokens in " + fmtInt(metrics.prompt_tokens) + " (cached " + percent(metrics.cached_tokens, metrics.prompt_tokens) + "), out " + fmtInt(metrics.completion_tokens),
      tools ? "tools: " + tools : "",
      step.error ? "error: " + step.error : "",
    ]
      .filter(Boolean)
      .join("\n");
  }

  // -- the step list, virtualised: turn sections, then the side requests -----------------------

  class StepList {
    constructor(scroller, model) {
      this.scroller = scroller;
      this.model = model;
      this.expanded = new Set(); // steps and side requests shown open
      this.selected = null;
      this.spacer = el("div", "list-spacer");
      this.window = el("div", "list-window");
      this.spacer.appendChild(this.window);
      scroller.appendChild(this.spacer);
      scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
      scroller.addEventListener("resized", () => this.update(true));
      new ResizeObserver(() => this.update(true)).observe(scroller);
      this.filter({});
    }

    // Rows of the steps that pass the filter: {agent, text, errors}, any of them unset.
    filter({ agent = null, text = "", errors = false }) {
      const needle = text.trim().toLowerCase();
      const keep = (step) => (!agent || step.agent === agent) && (!errors || step.error) && (!needle || haystack(step).includes(needle));
      this.rows = [];
      this.rowOf = new Map(); // step or side -> row number
      for (const [turn, steps] of this.model.turns) {
        const shown = steps.filter(keep);
        if (!shown.length) continue;
        this.rows.push({ kind: "turn", turn, steps });
        for (const step of shown) {
          this.rowOf.set(step, this.rows.length);
          this.rows.push({ kind: "step", item: step });
        }
      }
      const sides = this.model.sides.filter(
        (side) => (!agent || side.agent === agent) && (!errors || side.raw.error) && (!needle || JSON.stringify(side.raw).toLowerCase().includes(needle))
      );
      if (sides.length) {
        this.rows.push({ kind: "sides", count: sides.length });
        for (const side of sides) {
          this.rowOf.set(side, this.rows.length);
          this.rows.push({ kind: "side", item: side });
        }
      }
      this.shownSteps = this.rows.filter((row) => row.kind === "step").length;
      const count = this.rows.length;
      this.heights = new Float64Array(count);
      for (let i = 0; i < count; i++) this.heights[i] = this.rows[i].kind === "step" || this.rows[i].kind === "side" ? 27 : 35;
      this.offsets = new Float64Array(count + 1);
      this.rendered = new Map(); // row number -> element
      this.recompute();
      this.scroller.scrollTop = 0;
      this.redraw();
    }

    recompute() {
      let y = 0;
      for (let i = 0; i < this.heights.length; i++) {
        this.offsets[i] = y;
        y += this.heights[i];
      }
      this.offsets[this.heights.length] = y;
      this.spacer.style.height = y + "px";
    }

    rowAt(y) {
      let low = 0;
      let high = this.heights.length - 1;
      while (low < high) {
        const mid = (low + high + 1) >> 1;
        if (this.offsets[mid] <= y) low = mid;
        else high = mid - 1;
      }
      return low;
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.update();
      });
    }

    // Draw the rows in view: rows that scrolled out are removed, new ones inserted in place, so a
    // scroll step builds only the few rows it uncovers. Collapsed rows and headings have a fixed
    // height; open ones are measured when drawn, and all of them again on `remeasure` (a resize).
    update(remeasure) {
      if (!this.rows.length) {
        this.window.style.transform = "";
        this.window.replaceChildren(el("p", "muted empty", "No step matches the filter."));
        return;
      }
      const top = this.scroller.scrollTop;
      const first = Math.max(0, this.rowAt(top) - ROW_OVERSCAN);
      const last = Math.min(this.rows.length - 1, this.rowAt(top + this.scroller.clientHeight) + ROW_OVERSCAN);
      for (const [i, node] of [...this.rendered]) {
        if (i < first || i > last) {
          node.remove();
          this.rendered.delete(i);
        }
      }
      const measure = [];
      let next = null;
      for (let i = last; i >= first; i--) {
        let node = this.rendered.get(i);
        if (!node) {
          node = this.renderRow(i);
          this.rendered.set(i, node);
          this.window.insertBefore(node, next);
          if (this.expanded.has(this.rows[i].item)) measure.push(i);
        } else if (remeasure) measure.push(i);
        next = node;
      }
      this.window.style.transform = "translateY(" + this.offsets[first] + "px)";
      let changed = false;
      for (const i of measure) {
        const height = this.rendered.get(i).offsetHeight;
        if (height && height !== this.heights[i]) {
          this.heights[i] = height;
          changed = true;
        }
      }
      if (changed) this.recompute();
    }

    // Forget every drawn row (their content changed): the next update draws them afresh.
    redraw() {
      this.rendered.clear();
      this.window.replaceChildren();
      this.update();
    }

    renderRow(i) {
      const row = this.rows[i];
      if (row.kind === "turn") return turnHeader(row, this.model);
      if (row.kind === "sides") return el("div", "list-heading", "Side requests (" + row.count + "): not agent steps");
      const target = row.item;
      const item = row.kind === "step" ? stepRow(target, this.model) : sideRow(target, this.model);
      if (this.selected === target) item.classList.add("selected");
      item.firstChild.addEventListener("click", () => this.toggle(target));
      if (this.expanded.has(target)) {
        item.classList.add("open");
        item.appendChild(row.kind === "step" ? stepDetail(target, this.model, (step) => this.reveal(step)) : sideDetail(target));
      }
      return item;
    }

    toggle(target) {
      if (this.expanded.has(target)) this.expanded.delete(target);
      else this.expanded.add(target);
      this.select(target);
    }

    select(target) {
      this.selected = target;
      this.redraw();
      if (target.raw && target.source && this.onSelect) this.onSelect(target);
    }

    // Select the next (1) or previous (-1) step or side request, scrolled into view.
    move(delta) {
      let i = this.selected && this.rowOf.has(this.selected) ? this.rowOf.get(this.selected) : delta > 0 ? -1 : this.rows.length;
      do i += delta;
      while (i >= 0 && i < this.rows.length && !this.rows[i].item);
      if (i < 0 || i >= this.rows.length) return;
      this.select(this.rows[i].item);
      const top = this.offsets[i];
      const bottom = this.offsets[i + 1];
      if (top < this.scroller.scrollTop) this.scroller.scrollTop = top;
      else if (bottom > this.scroller.scrollTop + this.scroller.clientHeight) this.scroller.scrollTop = bottom - this.scroller.clientHeight;
    }

    // Open a step or side request and scroll to it; one hidden by the filter clears the filter first.
    reveal(target) {
      if (!this.rowOf.has(target) && this.onFilterCleared) {
        this.onFilterCleared();
        this.filter({});
      }
      const i = this.rowOf.get(target);
      if (i === undefined) return;
      this.expanded.add(target);
      this.select(target);
      this.scroller.scrollTop = Math.max(0, this.offsets[i] - 40);
      this.update();
    }
  }

  // Everything searchable in a step, lower-cased once.
  function haystack(step) {
    if (step.haystack === undefined) {
      const raw = step.raw;
      const parts = [textOf(raw.message), textOf(raw.reasoning_content), step.agent.label, step.agent.id, step.error || ""];
      for (const call of raw.tool_calls || []) parts.push(call.function_name, call.tool_call_id, prettyJson(call.arguments === undefined ? "" : call.arguments));
      for (const result of (raw.observation && raw.observation.results) || []) parts.push(textOf(result.content));
      parts.push(JSON.stringify(lineage(raw)));
      step.haystack = parts.join("\n").toLowerCase();
    }
    return step.haystack;
  }

  function turnHeader(row, model) {
    const head = el("div", "list-heading turn-heading");
    head.dataset.turn = row.turn;
    const calls = row.steps.filter((s) => s.source === "agent" && !s.placeholder);
    const agents = new Set(calls.map((s) => s.agent));
    const first = row.steps[0];
    const last = greatest(row.steps.map((s) => s.end), first.end);
    append(
      head,
      el("span", "turn-name", "Turn " + row.turn),
      el("span", "muted", "+" + fmtDuration(first.t - model.start) + " · " + fmtDuration(last - first.t)),
      el("span", "muted", calls.length + " LLM calls" + (agents.size > 1 ? " by " + agents.size + " agents" : ""))
    );
    return head;
  }

  function stepRow(step, model) {
    const raw = step.raw;
    const item = el("div", "row step-row source-" + step.source + (step.error ? " error" : ""));
    item.dataset.agentId = step.agent.id;
    item.dataset.stepId = raw.step_id;
    const head = el("div", "row-head");
    const agentChip = el("span", "agent-chip");
    agentChip.style.marginLeft = step.agent.depth * 12 + "px";
    agentChip.style.borderColor = step.agent.color;
    agentChip.textContent = step.agent.label;
    agentChip.title = agentPath(step.agent) + "\n" + step.agent.id;
    const calls = raw.tool_calls || [];
    let preview;
    if (step.placeholder) preview = "(no LLM call of its own yet)";
    else if (step.error && !textOf(raw.message)) preview = "error: " + step.error;
    else preview = firstLine(textOf(raw.message), 160) || (calls.length ? "" : step.source === "agent" ? "(empty answer)" : "");
    append(head, el("span", "time", "+" + fmtDuration(step.t - model.start)), agentChip, el("span", "source", step.source));
    const text = el("span", "preview", preview);
    const tools = el("span", "tools");
    for (const call of calls.slice(0, 6)) tools.appendChild(el("span", "tool-chip", call.function_name));
    if (calls.length > 6) tools.appendChild(el("span", "tool-chip", "+" + (calls.length - 6)));
    const metrics = raw.metrics || {};
    const numbers = el("span", "numbers");
    if (step.source === "agent" && !step.placeholder) {
      numbers.textContent =
        fmtInt(metrics.prompt_tokens) + " in · " + percent(metrics.cached_tokens, metrics.prompt_tokens) + " cached · " + fmtInt(metrics.completion_tokens) + " out · " + fmtDuration(step.latency);
    }
    append(head, tools, text, numbers, step.kv ? reuseChip(step.kv) : null);
    item.appendChild(head);
    return item;
  }

  // The row's compact KV figure: the prompt's share a lineage-routed worker had cached.
  function reuseChip(kv) {
    const chip = el("span", "reuse-chip", "KV " + percent(kv.cached_lineage, kv.prompt_tokens));
    chip.title =
      "prefix cached when routed by lineage (agent-lineage kv); shared with this agent " + fmtInt(kv.same_agent) +
      ", its parent " + fmtInt(kv.parent) + ", a sibling " + fmtInt(kv.sibling) + ", another session " + fmtInt(kv.other_session) +
      " of " + fmtInt(kv.prompt_tokens) + " tokens";
    return chip;
  }

  function reuseSection(kv, model) {
    const shared = (tokens) => fmtInt(tokens) + " · " + percent(tokens, kv.prompt_tokens);
    const table = keyValues([
      ["prompt tokens", fmtInt(kv.prompt_tokens)],
      ["shared with an earlier call of this agent", shared(kv.same_agent)],
      ["… of its parent", shared(kv.parent)],
      ["… of a sibling subagent", shared(kv.sibling)],
      ["… of another session", shared(kv.other_session)],
      ["cached when routed by lineage", shared(kv.cached_lineage)],
    ]);
    const note = el("p", "muted", model.reuse.workers + " workers, an LRU prefix cache of " + fmtInt(model.reuse.cache_tokens) + " tokens each, the sessions of this page in order (agent-lineage kv)");
    return section("Prefix reuse (KV)", table, note);
  }

  function stepDetail(step, model, reveal) {
    const raw = step.raw;
    const box = el("div", "detail");
    const message = textOf(raw.message);
    if (message) box.appendChild(section(step.source === "system" ? "System prompt" : step.source === "user" ? "User input" : "Message", textBlock(message, "message")));
    if (raw.reasoning_content) box.appendChild(section("Reasoning", textBlock(textOf(raw.reasoning_content), "reasoning")));
    const results = (raw.observation && raw.observation.results) || [];
    const answered = new Set();
    const calls = raw.tool_calls || [];
    if (calls.length) {
      const list = el("div", "tool-calls");
      for (const call of calls) {
        const card = el("div", "tool-call");
        const title = el("div", "tool-title");
        const kind = call.extra && call.extra.kind ? call.extra.kind : null;
        append(title, el("span", "tool-name", call.function_name), kind ? el("span", "badge", kind) : null, el("span", "tool-id", call.tool_call_id));
        card.appendChild(title);
        card.appendChild(textBlock(prettyJson(call.arguments === undefined ? {} : call.arguments), "arguments"));
        const matching = results.filter((r) => r.source_call_id === call.tool_call_id);
        for (const result of matching) {
          answered.add(result);
          card.appendChild(observation(result, model, reveal));
        }
        if (!matching.length) card.appendChild(el("div", "muted no-result", "no result recorded"));
        list.appendChild(card);
      }
      box.appendChild(section("Tool calls (" + calls.length + ")", list));
    }
    const others = results.filter((r) => !answered.has(r));
    if (others.length) box.appendChild(section("Observations", ...others.map((r) => observation(r, model, reveal))));
    const columns = el("div", "detail-columns");
    if (raw.metrics) {
      const metrics = raw.metrics;
      const extra = metrics.extra || {};
      columns.appendChild(
        section(
          "Tokens and timing",
          keyValues([
            ["prompt tokens", fmtInt(metrics.prompt_tokens)],
            ["cached (read)", metrics.cached_tokens === undefined ? null : fmtInt(metrics.cached_tokens) + " · " + percent(metrics.cached_tokens, metrics.prompt_tokens) + " of the prompt"],
            ["cache written", extra.cache_creation_input_tokens === undefined ? null : fmtInt(extra.cache_creation_input_tokens)],
            ["completion tokens", fmtInt(metrics.completion_tokens)],
            ["reasoning tokens", extra.reasoning_tokens === undefined ? null : fmtInt(extra.reasoning_tokens)],
            ["cost (USD)", metrics.cost_usd],
            ["latency", step.latency === null ? null : fmtDuration(step.latency)],
            ["first token after", step.ttft === null ? null : fmtDuration(step.ttft)],
          ])
        )
      );
    }
    if (step.kv) columns.appendChild(reuseSection(step.kv, model));
    const ours = lineage(raw);
    columns.appendChild(
      section(
        "Lineage",
        keyValues([
          ["timestamp", raw.timestamp],
          ["step", raw.step_id],
          ["turn", step.turn + (ours.new_turn ? " (opened here)" : "")],
          ["model", raw.model_name],
          ["reasoning effort", raw.reasoning_effort],
          ["session id", ours.session_id || model.document.session_id],
          ["agent id (x-dynamo-session-id)", ours.agent_id || step.agent.id],
          ["parent id (x-dynamo-parent-session-id)", ours.parent_id || (step.agent.parent ? step.agent.parent.id : null)],
          ["agent", agentPath(step.agent)],
          ["client", step.agent.trajectory.agent && step.agent.trajectory.agent.extra ? step.agent.trajectory.agent.extra.client : null],
          ["exchange id", ours.exchange_id],
          ["API", ours.api],
          ["path", ours.path],
          ["status", ours.status],
          ["stop reason", ours.stop_reason],
          ["error", ours.error],
        ])
      )
    );
    if (ours.evidence) columns.appendChild(section("Evidence of this call's scope", keyValues(Object.entries(ours.evidence))));
    const info = step.agent.info;
    if (info.evidence && step === step.agent.firstCall) columns.appendChild(section("Evidence of this agent (its first call)", keyValues(Object.entries(info.evidence))));
    box.appendChild(columns);
    const foreign = raw.extra ? Object.fromEntries(Object.entries(raw.extra).filter(([key]) => key !== "agent_lineage")) : {};
    if (Object.keys(foreign).length) box.appendChild(section("extra", textBlock(JSON.stringify(foreign, null, 2))));
    return box;
  }

  function observation(result, model, reveal) {
    const box = el("div", "observation" + (result.extra && result.extra.is_error ? " error" : ""));
    const title = el("div", "observation-title", result.extra && result.extra.is_error ? "result (error)" : "result");
    box.appendChild(title);
    for (const ref of refsOf(result)) {
      const agent = model.byId.get(ref.trajectory_id);
      const link = el("button", "subagent-link", "subagent " + (agent ? agentPath(agent) : ref.trajectory_id) + " →");
      link.title = ref.trajectory_id;
      if (agent && agent.steps.length) link.addEventListener("click", () => reveal(agent.steps[0]));
      else link.disabled = true;
      title.appendChild(link);
    }
    let content = textOf(result.content);
    if (/^\s*[[{]/.test(content) && content.length < 1000000) content = prettyJson(content);
    box.appendChild(content ? textBlock(content, "result") : el("div", "muted", "(empty)"));
    return box;
  }

  function sideRow(side, model) {
    const raw = side.raw;
    const item = el("div", "row side-row" + (raw.error ? " error" : ""));
    const head = el("div", "row-head");
    const usage = raw.usage || {};
    append(
      head,
      el("span", "time", isFinite(side.t) ? "+" + fmtDuration(side.t - model.start) : "–"),
      el("span", "agent-chip", side.agent ? side.agent.label : shortId(raw.agent_id)),
      el("span", "source", raw.kind || "side"),
      el("span", "preview", [raw.api, raw.path, raw.model, raw.status, raw.error].filter((v) => v !== undefined && v !== null).join("  ")),
      el("span", "numbers", usage.input_tokens !== undefined ? fmtInt(usage.input_tokens) + " in · " + fmtInt(usage.output_tokens) + " out" : "")
    );
    item.appendChild(head);
    return item;
  }

  function sideDetail(side) {
    const raw = side.raw;
    const box = el("div", "detail");
    const pairs = Object.entries(raw).filter(([key]) => key !== "usage");
    for (const [key, value] of Object.entries(raw.usage || {})) pairs.push(["usage." + key, fmtInt(value)]);
    box.appendChild(section("Side request", keyValues(pairs)));
    return box;
  }

  // -- routing -----------------------------------------------------------------------------

  function route() {
    const match = /^#session-(\d+)$/.exec(location.hash);
    if (match && index[Number(match[1])]) showSession(Number(match[1]));
    else if (index.length === 1) showSession(0);
    else showIndex();
  }

  window.addEventListener("hashchange", route);
  route();
})();
