"""Helpers for tests/test_agents.py: real Claude Code and Codex CLIs through mitmdump + the addon.

- where the CLIs are (scripts/install_agents puts them in a cache directory; PATH otherwise);
- a loopback-only network namespace (`unshare --net`) that the demo upstream, mitmdump and the
  CLIs share, so a CLI's start-up traffic to the internet fails at once instead of hanging, and
  nothing leaves the machine; without root the same runs in the host's network with the proxy
  environment refusing everything but the proxy;
- mitmdump in reverse or forward mode in front of the demo upstream (forward mode rewrites the
  real API hosts to the upstream with tests/upstream_redirect.py);
- CLI runs with bounded time (the whole process group is killed on timeout);
- scenario scripts for the demo upstream, and the lineage and trajectory checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from conftest import Mitmdump, free_port

ROOT = Path(__file__).resolve().parent.parent
REDIRECT = Path(__file__).resolve().parent / "upstream_redirect.py"
AGENT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "agents"

CLAUDE_VERSION = "2.1.197"  # the versions the fixtures were recorded with (scripts/install_agents)
CLAUDE_NEXT_VERSION = "2.1.332"  # the newest when pinned: the agent tests run on it too
CODEX_VERSION = "0.171.0"
GEMINI_VERSION = "0.61.0"
OPENCODE_VERSION = "1.18.33"
FAKE_KEY = "sk-fake"
CLI_TIMEOUT = 120.0  # seconds for one CLI invocation; its process group is killed after that

T = TypeVar("T")


# --- the CLIs --------------------------------------------------------------------------------


def agents_dir() -> Path:
    """Where scripts/install_agents installs the CLIs (same default, same override)."""
    if configured := os.environ.get("AGENT_LINEAGE_AGENTS_DIR"):
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "agent-lineage" / "agents"


def find_cli(name: str) -> Path | None:
    """The installed CLI: the cache directory first, then PATH."""
    candidate = agents_dir() / "bin" / name
    if candidate.exists() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def cli_version(path: Path) -> str:
    """`claude --version` -> '2.1.197', `codex --version` -> '0.171.0'."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = [w for w in out.split() if w[:1].isdigit()]
    return words[0] if words else out.strip()


# --- a loopback-only network namespace -------------------------------------------------------

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


class Network:
    """Where the upstream, mitmdump and the CLIs run: a fresh network namespace with only a
    loopback interface when we may make one (root), else the host's own network."""

    def __init__(self) -> None:
        self.dns: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.holder: subprocess.Popen | None = None
        self.path: str | None = None
        self.reason = ""
        if os.environ.get("AGENT_LINEAGE_HOST_NETWORK"):
            self.reason = "AGENT_LINEAGE_HOST_NETWORK is set: using the host network"
            return
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
            self.reason = "not root, or no unshare/nsenter: using the host network"
            return
        try:
            # unshare execs sh inside the new namespace; its first line says it is there, and it
            # lives until its stdin closes (here, or when this process dies: no orphan is left).
            holder = subprocess.Popen(
                ["unshare", "--net", "--", "sh", "-c", "echo ready; read _"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            self.reason = f"unshare failed ({e}): using the host network"
            return
        line = holder.stdout.readline() if holder.stdout else b""
        if line.strip() != b"ready":
            holder.kill()
            holder.wait()
            self.reason = "unshare --net failed: using the host network"
            return
        self.holder, self.path = holder, f"/proc/{holder.pid}/ns/net"
        self.call(_loopback_up)
        self._answer_dns()

    def _answer_dns(self) -> None:
        """The machine's DNS servers, inside the namespace, answer every name with NXDOMAIN at once:
        without them a lookup (Codex looks up ab.chatgpt.com and api.github.com) waits for the
        resolver's timeout, seconds per name, since nothing answers there."""
        for server in nameservers():
            if server != "127.0.0.1" and shutil.which("ip"):
                subprocess.run([*self.prefix(), "ip", "addr", "add", f"{server}/32", "dev", "lo"], capture_output=True)
            try:
                sock = self.call(lambda server=server: _bound_udp(server, 53))
            except OSError:
                continue
            thread = threading.Thread(target=_refuse_names, args=(sock, self.stopping), name="netns-dns", daemon=True)
            thread.start()
            self.dns.append(thread)

    @property
    def isolated(self) -> bool:
        return self.path is not None

    def prefix(self) -> list[str]:
        """Put before a command to run it in this network."""
        return ["nsenter", f"--net={self.path}", "--"] if self.path else []

    def call(self, fn: Callable[[], T]) -> T:
        """fn() run on a thread that has entered this network (sockets it makes stay in it)."""
        if not self.path:
            return fn()
        result: list[Any] = []

        def run() -> None:
            try:
                with open(self.path, "rb") as ns:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                result.append((True, fn()))
            except BaseException as e:  # handed to the caller
                result.append((False, e))

        thread = threading.Thread(target=run, name="in-netns")
        thread.start()
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self.stopping.set()
        for thread in self.dns:
            thread.join()
        if self.holder is not None:
            if self.holder.stdin:
                self.holder.stdin.close()
            try:
                self.holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
            self.holder = None


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def nameservers() -> list[str]:
    """The IPv4 name servers of /etc/resolv.conf."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and parts[1].count(".") == 3:
                found.append(parts[1])
    return found


def _bound_udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _refuse_names(sock: socket.socket, stopping: threading.Event) -> None:
    """Answer each DNS query on sock with NXDOMAIN (its question echoed), until `stopping`."""
    sock.settimeout(0.1)
    with sock:
        while not stopping.is_set():
            try:
                query, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            _answer_nxdomain(sock, query, peer)


def _answer_nxdomain(sock: socket.socket, query: bytes, peer: Any) -> None:
    if len(query) < 12:
        return
    end = 12
    while end < len(query) and query[end]:  # the question's name: length-prefixed labels
        end += 1 + query[end]
    question = query[12 : end + 5]  # the name's final zero byte, type and class
    flags = 0x8000 | (query[2] & 0x79) << 8 | 0x0080 | 3  # response, opcode and RD copied, RA, NXDOMAIN
    with contextlib.suppress(OSError):
        sock.sendto(query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + question, peer)


# --- mitmdump in front of the upstream -------------------------------------------------------


class Proxy(Mitmdump):
    """The addon's mitmdump in `network`, reverse (to the upstream) or forward (the CLI's HTTPS
    proxy; the real API hosts rewritten to the upstream). Saves its flows (-w), every call
    (lineage_calls_log) and the trajectories (lineage_dir) under `workdir`."""

    def __init__(self, workdir: Path, network: Network, mode: str, upstream_port: int, redirect_hosts: str = "") -> None:
        self.mode = mode
        self.flows = workdir / "flows.mitm"
        self.calls = workdir / "calls.jsonl"
        self.traces = workdir / "traces"
        upstream = f"127.0.0.1:{upstream_port}"
        args = ["-w", str(self.flows)]
        if mode == "reverse":
            mitm_mode = f"reverse:http://{upstream}"
        else:
            mitm_mode = "regular"
            args += [
                "--set", "connection_strategy=lazy",
                "--set", "upstream_cert=false",
                "-s", str(REDIRECT),
                "--set", f"redirect_to={upstream}",
            ]  # fmt: skip
            if redirect_hosts:
                args += ["--set", f"redirect_hosts={redirect_hosts}"]
        args += ["--set", f"lineage_dir={self.traces}", "--set", f"lineage_calls_log={self.calls}"]
        super().__init__(workdir, mitm_mode, *args, prefix=network.prefix(), port=network.call(free_port))

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def read_calls(self) -> list[dict]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines() if line.strip()]


# --- running a CLI ---------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)[:300]}\nexit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def run_cli(
    argv: list[str], env: dict[str, str], cwd: Path, network: Network, timeout: float = CLI_TIMEOUT, stdin: str | None = None
) -> Run:
    """Run a CLI to completion in `network` (`stdin`: text piped to it); on timeout kill its
    whole process group and fail."""
    start = time.monotonic()
    process = subprocess.Popen(
        [*network.prefix(), *argv],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed whole, shell tools included
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        run = Run(argv, -9, stdout, stderr, time.monotonic() - start)
        raise AssertionError(f"timed out after {timeout:.0f}s\n{run.describe()}") from None
    _kill_group(process)  # whatever it left behind in its group
    return Run(argv, process.returncode, stdout, stderr, time.monotonic() - start)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: no proxy, key or config of the machine leaks into a CLI run."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "TMPDIR": str(home / "tmp"),
    }
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def proxy_env(proxy: Proxy, network: Network) -> dict[str, str]:
    """Forward mode: the proxy for everything, and its CA. Reverse mode outside a namespace:
    a proxy that refuses, so a CLI's own internet traffic fails at once (the API is on NO_PROXY)."""
    if proxy.mode == "forward":
        url = proxy.url
        extra = {"NO_PROXY": "", "no_proxy": ""}
    elif not network.isolated:
        url = f"http://127.0.0.1:{network.call(free_port)}"  # nothing listens there
        extra = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    else:
        return {}
    return {name: url for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")} | extra


def claude_env(home: Path, proxy: Proxy, network: Network) -> dict[str, str]:
    env = base_env(home) | proxy_env(proxy, network)
    env |= {
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "IS_SANDBOX": "1",  # --dangerously-skip-permissions as root
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    if proxy.mode == "forward":
        env["NODE_EXTRA_CA_CERTS"] = str(proxy.ca_cert)
    else:
        env["ANTHROPIC_BASE_URL"] = proxy.url
    return env


def codex_env(home: Path, codex_home: Path, proxy: Proxy, network: Network, provider: str = "lineage") -> dict[str, str]:
    """Codex with a custom provider (`lineage`: HTTP POST /responses, the base URL is the proxy in
    reverse mode, api.openai.com in forward mode), or OpenAI's own provider (`openai`: an API key,
    Responses over a WebSocket to api.openai.com first; forward mode only)."""
    env = base_env(home) | proxy_env(proxy, network)
    env |= {"CODEX_HOME": str(codex_home), "OPENAI_API_KEY": FAKE_KEY}
    if proxy.mode == "forward":
        env["SSL_CERT_FILE"] = str(proxy.ca_cert)
    codex_home.mkdir(parents=True, exist_ok=True)
    config = 'model = "gpt-5.5"\n'
    if provider == "openai":
        env["CODEX_API_KEY"] = FAKE_KEY
    else:
        base_url = f"{proxy.url}/v1" if proxy.mode == "reverse" else "https://api.openai.com/v1"
        config += f"""model_provider = "lineage"

[model_providers.lineage]
name = "OpenAI through agent-lineage"
base_url = "{base_url}"
wire_api = "responses"
env_key = "OPENAI_API_KEY"
"""
    # Subagents may delegate too (Codex's default depth is 1: a child gets no collaboration tools).
    (codex_home / "config.toml").write_text(config + "\n[agents]\nmax_depth = 2\n")
    return env


def gemini_env(home: Path, proxy: Proxy, network: Network) -> dict[str, str]:
    """Gemini CLI on the Gemini API with a (fake) key; its base URL is the proxy in reverse mode,
    generativelanguage.googleapis.com through the proxy in forward mode. Settings: API-key auth,
    no folder-trust prompt, no telemetry or usage statistics, no update check."""
    env = base_env(home) | proxy_env(proxy, network)
    env["GEMINI_API_KEY"] = FAKE_KEY
    if proxy.mode == "forward":
        env["NODE_EXTRA_CA_CERTS"] = str(proxy.ca_cert)
    else:
        env["GOOGLE_GEMINI_BASE_URL"] = proxy.url
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "telemetry": {"enabled": False},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
    }
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    return env


def gemini_argv(cli: Path, prompt: str, *, resume: bool = False) -> list[str]:
    argv = [str(cli), "--yolo", "--output-format", "json"]
    return [*argv, "--resume", "latest", "-p", prompt] if resume else [*argv, "-p", prompt]


def opencode_env(home: Path, proxy: Proxy, network: Network) -> dict[str, str]:
    """OpenCode with one OpenAI-compatible provider (Chat Completions) whose baseURL is the proxy
    (reverse mode), for the agent and for its small model (the session title)."""
    env = base_env(home) | proxy_env(proxy, network)
    env |= {"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}
    config = {
        "provider": {
            "lineage": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Demo upstream through agent-lineage",
                "options": {"baseURL": f"{proxy.url}/v1", "apiKey": FAKE_KEY},
                "models": {"demo-model": {"name": "demo-model", "tool_call": True}},
            }
        },
        "model": "lineage/demo-model",
        "small_model": "lineage/demo-model",
        "autoupdate": False,
        "share": "disabled",
    }
    (home / ".config" / "opencode").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(config))
    return env


def opencode_argv(cli: Path, *, resume: bool = False) -> list[str]:
    """`opencode run` takes the prompt on stdin: as arguments it would quote them itself."""
    return [str(cli), "run", "--format", "json", *(["--continue"] if resume else [])]


def claude_argv(cli: Path, prompt: str, *, resume: bool = False) -> list[str]:
    argv = [str(cli), "-p", "--dangerously-skip-permissions", "--output-format", "json"]
    return [*argv, "--continue", prompt] if resume else [*argv, prompt]


def codex_argv(cli: Path, prompt: str, *, resume: bool = False) -> list[str]:
    flags = ["--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--json"]
    if resume:
        return [str(cli), "exec", "resume", "--last", *flags, prompt]
    return [str(cli), "exec", *flags, prompt]


def run_claude_tui(
    cli: Path, env: dict[str, str], cwd: Path, network: Network, prompts: list[tuple[str, str]], timeout: float = 60.0
) -> Run:
    """Claude Code's interactive UI in a detached tmux (its own server, in `network`): type each
    prompt, wait until its answer (the second of each pair) is on the screen, then /exit. The
    first start's dialogs are pre-answered in ~/.claude.json (onboarding, folder trust, API key).
    Returns the screen at the end as stdout."""
    home = Path(env["HOME"])
    settings = home / ".claude.json"
    state = json.loads(settings.read_text()) if settings.exists() else {}
    state |= {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [env["ANTHROPIC_API_KEY"][-20:]], "rejected": []},
        "projects": {str(cwd): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
    }
    settings.write_text(json.dumps(state))
    env = env | {"TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    socket_path = str(home / "tmux.sock")
    start = time.monotonic()

    def tmux(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*network.prefix(), "tmux", "-S", socket_path, *args], env=env, capture_output=True, text=True, timeout=30)

    def screen() -> str:
        return tmux("capture-pane", "-p").stdout

    def wait_for(predicate: Callable[[str], bool], what: str) -> None:
        while time.monotonic() - start < timeout:
            if predicate(screen()):
                return
            time.sleep(0.2)
        tmux("kill-server")
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen:\n{screen()}")

    argv = [str(cli)]
    started = tmux("new-session", "-d", "-x", "160", "-y", "50", "-c", str(cwd), *argv)
    assert started.returncode == 0, started.stderr
    try:
        wait_for(lambda text: "❯" in text, "the prompt")
        for prompt, answer in prompts:
            tmux("send-keys", "-l", prompt)
            time.sleep(0.3)
            tmux("send-keys", "Enter")
            wait_for(lambda text, answer=answer: f"● {answer}" in text, f"the answer {answer!r}")
        final = screen()
        tmux("send-keys", "-l", "/exit")
        time.sleep(0.3)
        for _ in range(10):  # Enter picks the command from the completion list, then runs it
            tmux("send-keys", "Enter")
            time.sleep(0.3)
            if tmux("has-session").returncode != 0:
                break
    finally:
        tmux("kill-server")
    return Run(argv, 0, final, "", time.monotonic() - start)


# --- scripts for the demo upstream -----------------------------------------------------------


def script(*steps: str) -> str:
    return "[[script: " + " ; ".join(steps) + "]]"


def tool(name: str, **arguments: Any) -> str:
    return f"tool {name} {json.dumps(arguments)}"


def tools(*calls: tuple[str, dict]) -> str:
    return "tools " + " ".join(f"{name} {json.dumps(arguments)}" for name, arguments in calls)


def say(text: str) -> str:
    return f"say {json.dumps(text)}"


def claude_agent(task: str, *steps: str, foreground: bool = False) -> dict:
    """The `Agent` tool input that delegates `task` to a subagent playing `steps`; `foreground`
    asks for it to run while the parent waits (newer Claude Code runs subagents in the
    background unless told, and tells the parent of each end in a later user message)."""
    arguments = {"description": task, "prompt": f"{task} {script(*steps)}", "subagent_type": "general-purpose"}
    return arguments | {"run_in_background": False} if foreground else arguments


def codex_spawn(task: str, *steps: str) -> dict:
    return {"message": f"{task} {script(*steps)}"}


def gemini_agent(task: str, *steps: str) -> dict:
    """The `invoke_agent` arguments that delegate `task` to Gemini CLI's generalist subagent;
    a subagent ends by calling `complete_task` (a text answer alone earns it a reminder)."""
    return {"agent_name": "generalist", "prompt": f"{task} {script(*steps)}"}


def opencode_task(task: str, *steps: str) -> dict:
    """The `task` tool input that delegates `task` to OpenCode's general subagent."""
    return {"description": task, "prompt": f"{task} {script(*steps)}", "subagent_type": "general"}


def gemini_done(response: str) -> str:
    return tool("complete_task", result={"response": response})


CODEX_DISCOVER = tool("tool_search", query="spawn agent", limit=8)
CODEX_WAIT = tool("wait_agent", targets="$outputs.agent_id", timeout_ms=60000)


# --- Dynamo's view of the requests -----------------------------------------------------------


def header(headers: list[tuple[str, str]] | dict[str, str], name: str) -> str | None:
    items = headers.items() if isinstance(headers, dict) else headers
    return next((v.strip() for k, v in items if k.lower() == name), None)


def native_lineage(headers: Any) -> tuple[str | None, str | None]:
    """(session, parent) a Dynamo frontend derives from the CLI's own headers when no x-dynamo-*
    header is present (docs/dynamo.md, "How the frontend reads lineage"): Claude Code, then Codex, then OpenCode."""
    claude_session = header(headers, "x-claude-code-session-id")
    if claude_session:
        agent = header(headers, "x-claude-code-agent-id")
        if agent:
            return agent, header(headers, "x-claude-code-parent-agent-id") or claude_session
        return claude_session, None
    if thread := header(headers, "thread-id"):
        return thread, header(headers, "x-codex-parent-thread-id")
    if session := header(headers, "x-session-id"):
        return session, header(headers, "x-parent-session-id")
    return None, None


def stamped_lineage(headers: Any) -> tuple[str | None, str | None]:
    return header(headers, "x-dynamo-session-id"), header(headers, "x-dynamo-parent-session-id")


@dataclass
class LineageReport:
    mapping: dict[str, str]  # native agent id -> stamped agent id
    parents: dict[str, str | None]  # stamped agent id -> stamped parent id
    requests: dict[str, int] = field(default_factory=dict)  # stamped agent id -> LLM requests

    def tree(self) -> list:
        """The agent tree as nested lists of children (siblings in a canonical order):
        [] one agent, [[]] one subagent, [[], []] two, [[[]]] a nested one."""

        def children(parent: str | None) -> list:
            return canonical([children(agent) for agent, p in self.parents.items() if p == parent])

        roots = [agent for agent, p in self.parents.items() if p is None]
        assert len(roots) == 1, f"expected one root agent, got {roots}"
        return children(roots[0])


def check_stamped_lineage(headers_of_requests: list[Any]) -> LineageReport:
    """For CLIs that send no ids (Gemini CLI): every request carries a valid x-dynamo-session-id,
    each agent one parent throughout, and every parent made a request before its child."""
    parents: dict[str, str | None] = {}
    counts: dict[str, int] = {}
    for n, headers in enumerate(headers_of_requests):
        stamped, stamped_parent = stamped_lineage(headers)
        where = f"request {n}: stamped {stamped}/{stamped_parent}"
        assert stamped and len(stamped.encode()) <= 256 and stamped.isascii() and stamped.isprintable(), where
        assert stamped_parent is None or stamped_parent in parents, f"{where}: the parent has made no request before"
        assert parents.setdefault(stamped, stamped_parent) == stamped_parent, f"{where}: the parent changed"
        counts[stamped] = counts.get(stamped, 0) + 1
    return LineageReport({agent: agent for agent in parents}, parents, counts)


def check_lineage(headers_of_requests: list[Any]) -> LineageReport:
    """Every request carries x-dynamo-session-id, a parent header exactly when the agent is not
    the root, and the stamped lineage names the same grouping and parents as Dynamo's own rule on
    the CLI's headers: one stamped id per native agent id and back, parents mapped alike."""
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    counts: dict[str, int] = {}
    for n, headers in enumerate(headers_of_requests):
        native, native_parent = native_lineage(headers)
        stamped, stamped_parent = stamped_lineage(headers)
        where = f"request {n}: native {native}/{native_parent}, stamped {stamped}/{stamped_parent}"
        assert native, f"{where}: the CLI sent no agent id"
        assert stamped, f"{where}: no x-dynamo-session-id"
        assert len(stamped.encode()) <= 256 and stamped.isascii() and stamped.isprintable(), where
        assert forward.setdefault(native, stamped) == stamped, f"{where}: one native agent, two stamped ids"
        assert backward.setdefault(stamped, native) == native, f"{where}: two native agents, one stamped id"
        if native_parent is None:
            assert stamped_parent is None, f"{where}: a root agent with a parent header"
        else:
            assert stamped_parent is not None, f"{where}: a subagent without a parent header"
            assert stamped_parent != stamped, where
            expected = forward.get(native_parent)
            assert expected is not None, f"{where}: the parent has made no request before its child"
            assert stamped_parent == expected, f"{where}: parent {stamped_parent}, Dynamo's rule gives {expected}"
        assert parents.setdefault(stamped, stamped_parent) == stamped_parent, f"{where}: the parent changed"
        counts[stamped] = counts.get(stamped, 0) + 1
    return LineageReport(forward, parents, counts)


# --- trajectories ----------------------------------------------------------------------------


def load_trajectories(directory: Path) -> dict[str, dict]:
    """session_id -> trajectory document, for every trajectory-*.json in directory."""
    found = {}
    for path in sorted(directory.glob("trajectory-*.json")):
        document = json.loads(path.read_text())
        found[document.get("session_id", path.stem)] = document
    return found


def agent_steps(trajectory: dict) -> list[dict]:
    return [s for s in trajectory.get("steps", []) if s.get("source") == "agent"]


def walk_trajectories(trajectory: dict, depth: int = 0) -> list[tuple[int, dict]]:
    """(depth, trajectory) for the root and every embedded subagent trajectory, depth first."""
    found = [(depth, trajectory)]
    for child in trajectory.get("subagent_trajectories") or []:
        found += walk_trajectories(child, depth + 1)
    return found


def canonical(children: list) -> list:
    """Siblings sorted, so that parallel subagents compare equal whichever started first."""
    return sorted(children, key=repr)


def trajectory_tree(trajectory: dict) -> list:
    """The subagent tree of a trajectory, as nested lists (like LineageReport.tree)."""
    return canonical([trajectory_tree(child) for child in trajectory.get("subagent_trajectories") or []])


def check_observations(trajectory: dict, unanswered: frozenset[str] = frozenset()) -> None:
    """Every tool call of every agent step has an observation result with its id (but calls of
    the `unanswered` tools, which end an agent: no request carries their result), and every
    subagent reference resolves to an embedded trajectory of that parent."""
    for _, t in walk_trajectories(trajectory):
        embedded = {c.get("trajectory_id") for c in t.get("subagent_trajectories") or []}
        for step in agent_steps(t):
            results = (step.get("observation") or {}).get("results") or []
            by_call = {r.get("source_call_id") for r in results}
            for call in step.get("tool_calls") or []:
                if call["function_name"] in unanswered:
                    continue
                assert call["tool_call_id"] in by_call, f"step {step['step_id']}: no observation for {call}"
                assert isinstance(call.get("arguments"), dict)
            for result in results:
                for ref in result.get("subagent_trajectory_ref") or []:
                    assert ref.get("trajectory_id") in embedded, f"step {step['step_id']}: dangling ref {ref}"


def copy_if_recording(name: str, workdir: Path, meta: dict) -> None:
    """With AGENT_LINEAGE_RECORD=DIR (scripts/record_fixtures), keep this run as DIR/<name>/:
    flows.mitm, the trajectories, and meta.json (CLI version, mode, prompts)."""
    target_root = os.environ.get("AGENT_LINEAGE_RECORD")
    if not target_root:
        return
    target = Path(target_root) / name
    shutil.rmtree(target, ignore_errors=True)
    (target / "traces").mkdir(parents=True)
    shutil.copy2(workdir / "flows.mitm", target / "flows.mitm")
    for path in sorted((workdir / "traces").glob("trajectory-*.json")):
        shutil.copy2(path, target / "traces" / path.name)
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
