"""`agent-lineage`: run the proxy, turn saved flows into trajectories; check, summarise and
compare trajectories.

Each subcommand is one `cmd_<name>(args) -> int` function plus one entry in `build_parser()`.
Exit codes: 0 ok, 1 an invalid trajectory, a difference or a replay miss, 2 a usage or input error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from . import __version__, addon_path
from .harness import HarnessTableError
from .kv import DEFAULT_CACHE_TOKENS, DEFAULT_WORKERS
from .pipeline import CallLog, CallSink, Pipeline
from .settings import DEFAULTS, Settings
from .shape import diff_shapes, plural, shape_of, summary_lines
from .trajectories import TrajectoryFiles
from .validate import validate_trajectory

OK, INVALID, USAGE = 0, 1, 2


def exit_codes(one: str | None) -> str:
    return f"exit status: 0 ok, {f'1 {one}, ' if one else ''}2 a usage or input error"


BAR_WIDTH = 30


class InputError(Exception):
    """Input we cannot use (a missing file, unreadable data): reported on stderr, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"] and argv[1:2] not in (["-h"], ["--help"]):
        return cmd_proxy(argparse.Namespace(command="proxy", mitmdump_args=argv[1:]))  # all of it is mitmdump's
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage message (or the help)
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return args.run(args)
    except InputError as e:
        error(args.command, str(e))
        return USAGE


def error(command: str, message: str) -> None:
    """Every subcommand reports problems the same way: `agent-lineage CMD: error: ...` on stderr."""
    print(f"agent-lineage {command}: error: {message}", file=sys.stderr)


def warn(command: str, message: str) -> None:
    print(f"agent-lineage {command}: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-lineage",
        description="Agent sessions, turns and subagents from LLM traffic: Dynamo lineage headers and ATIF v1.7 trajectories.",
        epilog=exit_codes("an invalid trajectory or a difference"),
    )
    parser.add_argument("--version", action="version", version=f"agent-lineage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, one: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=description, epilog=exit_codes(one), formatter_class=argparse.RawDescriptionHelpFormatter
        )

    proxy = command(
        "proxy",
        "run mitmdump with the addon loaded; the arguments go to mitmdump",
        "Runs `mitmdump -s <addon> ARGS...`: the same as giving mitmdump the path `agent-lineage addon-path`\n"
        "prints. Example: agent-lineage proxy --mode reverse:https://api.anthropic.com@8080",
        one="or other: mitmdump's own",
    )
    proxy.add_argument("mitmdump_args", nargs=argparse.REMAINDER, metavar="ARGS", help="mitmdump's arguments (mitmdump --help)")
    proxy.set_defaults(run=cmd_proxy)

    path = command(
        "addon-path",
        "print the path of the addon file to give `mitmdump -s` (or mitmweb)",
        'Prints the addon\'s path: mitmdump -s "$(agent-lineage addon-path)"',
    )
    path.set_defaults(run=cmd_addon_path)

    convert = command(
        "convert",
        "write the trajectories of saved flows (mitmdump -w), as the live addon would",
        "Replays saved flows through the same pipeline as the live addon, in traffic order, and writes one\n"
        "trajectory per root session. A truncated file (what a killed mitmdump leaves) is read up to where it stops.",
    )
    convert.add_argument("flows", nargs="+", metavar="FLOWS.mitm", help="saved flow files, replayed together in traffic order")
    convert.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="directory for trajectory-<session>.json (files of the same sessions are replaced)",
    )
    convert.add_argument("--calls", metavar="FILE.jsonl", help="also write every LLM call as one JSON line (the file is replaced)")
    convert.add_argument("--harness-file", metavar="F", help="YAML file merged over the built-in harness table")
    convert.add_argument(
        "--client-headers",
        choices=["respect", "override"],
        default="respect",
        help="x-dynamo-* lineage sent by clients: keep it (respect) or infer ours (override)",
    )
    convert.add_argument(
        "--turn-gap",
        type=_positive,
        default=DEFAULTS.turn_gap_seconds,
        metavar="S",
        help=f"idle seconds after which a root agent's next request opens a turn ({DEFAULTS.turn_gap_seconds:g})",
    )
    convert.add_argument(
        "--session-ttl",
        type=_positive,
        default=DEFAULTS.session_ttl_seconds,
        metavar="S",
        help=f"idle seconds after which a session's state is released ({DEFAULTS.session_ttl_seconds:g})",
    )
    convert.set_defaults(run=cmd_convert)

    validate = command(
        "validate",
        "check trajectory files against ATIF v1.7 (official models and the stricter spec rules)",
        "Prints `FILE: ok` or one line per problem, led by its JSON path.",
        one="a file is not a valid trajectory",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(run=cmd_validate)

    summary = command(
        "summary", "the shape of a trajectory: agents, turns, steps, tools, tokens, side requests", "The terminal view of one trajectory."
    )
    summary.add_argument("file", metavar="FILE")
    summary.set_defaults(run=cmd_summary)

    diff = command(
        "diff",
        "structural differences of two trajectories, ignoring ids, timestamps and latencies",
        "Compares shapes, not bytes: a missing tool call, a turn split in two, a subagent on another parent.",
        one="they differ",
    )
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.add_argument("--tokens", action="store_true", help="also compare token counts")
    diff.set_defaults(run=cmd_diff)

    view = command(
        "view",
        "one self-contained HTML page of trajectories: agent lanes on a timeline, every step expandable",
        "Writes one HTML file (inline CSS and JS, no network) that opens from file://.",
    )
    view.add_argument(
        "inputs", nargs="+", metavar="FILE.json|DIR", help="trajectory files, or a directory of them (gives an index of its sessions)"
    )
    view.add_argument(
        "-o",
        "--output",
        metavar="FILE.html",
        help="where to write the page (default: FILE.html beside one file, DIR/index.html for one directory)",
    )
    view.add_argument("--open", action="store_true", help="open the page in the default browser")
    view.set_defaults(run=cmd_view)

    replay = command(
        "replay",
        "an LLM API upstream answering from saved flows: re-run an agent against a capture, no key, no network",
        "Answers each request with the recorded response of the matching recorded request (docs/replay.md).",
        one="a request missed",
    )
    replay.add_argument(
        "flows", nargs="*", metavar="FLOWS.mitm", help="saved flow files whose recorded answers are served (none with --mode record)"
    )
    replay.add_argument("--port", type=int, default=8765, metavar="P", help="port to listen on (8765; 0 picks a free one)")
    replay.add_argument("--listen-host", default="127.0.0.1", metavar="H", help="address to listen on (127.0.0.1)")
    replay.add_argument(
        "--mode", choices=["replay", "record", "hybrid"], default="replay",
        help="replay: a miss is an error; hybrid: a miss is forwarded to --upstream and recorded; record: forward and record everything",
    )  # fmt: skip
    replay.add_argument("--upstream", metavar="URL", help="where record and hybrid modes forward (e.g. https://api.anthropic.com)")
    replay.add_argument(
        "--timing", choices=["fast", "recorded"], default="fast", help="fast: answer at once; recorded: wait the recorded times"
    )
    replay.add_argument(
        "-w",
        "--write",
        metavar="FILE.mitm",
        help="new flow file for the forwarded exchanges (record and hybrid modes; replay-recorded.mitm)",
    )
    replay.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="text left out of the request key, e.g. a temporary directory (repeatable)",
    )
    replay.set_defaults(run=cmd_replay)

    kv = command(
        "kv",
        "what lineage is worth to a Dynamo deployment: prefix reuse per request and a routing simulation",
        "Reads trajectories (.json) or saved flows (anything else) and prints, per routing strategy (random,\n"
        "round robin, our lineage, Dynamo's native header rule), the share of prompt tokens a worker's prefix\n"
        "cache would serve, and the sessions and subagents that gain most. docs/kv.md explains the model.",
    )
    kv.add_argument("files", nargs="+", metavar="FILE", help="trajectory files or saved flow files")
    kv.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N", help=f"workers behind the router ({DEFAULT_WORKERS})")
    kv.add_argument(
        "--cache-tokens",
        type=int,
        default=DEFAULT_CACHE_TOKENS,
        metavar="T",
        help=f"prefix cache size of each worker, in tokens ({DEFAULT_CACHE_TOKENS:,})",
    )
    kv.add_argument("--seed", type=int, default=0, help="seed of the random strategy (0)")
    kv.set_defaults(run=cmd_kv)

    demo = command(
        "demo",
        "the built-in demo: a local LLM API imitation behind mitmdump and this addon, a scripted agent session per wire API",
        "No API key and no internet: everything runs on 127.0.0.1.",
        one="no trajectory was written",
    )
    demo.add_argument("--traces", default="traces", metavar="DIR", help="directory for the trajectories (traces)")
    demo.add_argument("--no-stream", action="store_true", help="ask for JSON replies instead of streamed ones")
    demo.set_defaults(run=cmd_demo)
    return parser


# -- subcommands --------------------------------------------------------------------------


def cmd_proxy(args: argparse.Namespace) -> int:
    from mitmproxy.tools.main import mitmdump

    return mitmdump(["-s", addon_path(), *args.mitmdump_args]) or OK


def cmd_addon_path(args: argparse.Namespace) -> int:
    print(addon_path())
    return OK


def cmd_convert(args: argparse.Namespace) -> int:
    from . import offline  # imports mitmproxy: only this subcommand needs it

    flows = []
    for name in args.flows:
        if not Path(name).is_file():
            raise InputError(f"{name}: no such file")
        bar = ProgressBar(name, sys.stderr)
        try:
            read = offline.read_flow_file(name, bar)
        finally:
            bar.close()
        if read.problem is not None and not read.flows:
            raise InputError(f"{name}: not a saved flow file ({read.problem})")
        if read.problem is not None:
            warn(
                "convert",
                f"{name}: stopped reading at byte {read.stopped_at} of {read.size} ({read.problem}); kept {plural(len(read.flows), 'flow')} read before it",  # noqa: E501
            )
        flows += read.flows
    settings = Settings(
        stamp=False,
        respect_client_lineage=args.client_headers == "respect",
        turn_gap_seconds=args.turn_gap,
        session_ttl_seconds=args.session_ttl,
        harness_file=args.harness_file,
    )
    try:
        files = TrajectoryFiles(args.output, replace_existing=True)
        sinks: list[CallSink] = [files]
        if args.calls:
            Path(args.calls).write_bytes(b"")
            sinks.append(CallLog(args.calls))
        pipeline = Pipeline(settings, sinks)
        calls = offline.replay(flows, pipeline)
        pipeline.close()
    except (OSError, HarnessTableError) as e:
        raise InputError(str(e)) from None
    for path in files.written:
        print(path)
    if not calls:
        warn("convert", f"no LLM call in {plural(len(flows), 'flow')}: nothing to write")
    print(f"{plural(len(calls), 'LLM call')}, {plural(len(files.written), 'trajectory file')}", file=sys.stderr)
    return OK


def cmd_validate(args: argparse.Namespace) -> int:
    status = OK
    for name in args.files:
        try:
            data = _read(name)
        except InputError as e:
            error("validate", str(e))
            status = USAGE
            continue
        try:
            problems = validate_trajectory(orjson.loads(data))
        except orjson.JSONDecodeError as e:
            problems = [f"not JSON: {e}"]
        for problem in problems:
            print(f"{name}: {problem}")
        if problems:
            status = max(status, INVALID)
        else:
            print(f"{name}: ok")
    return status


def cmd_summary(args: argparse.Namespace) -> int:
    document = _read_trajectory(args.file)
    print(args.file)
    for line in summary_lines(shape_of(document)):
        print(line)
    return OK


def cmd_diff(args: argparse.Namespace) -> int:
    a, b = _read_trajectory(args.a), _read_trajectory(args.b)
    differences = diff_shapes(shape_of(a), shape_of(b), tokens=args.tokens)
    for line in differences:
        print(line)
    if differences:
        return INVALID
    print(f"{args.a} and {args.b} have the same shape")
    return OK


def cmd_view(args: argparse.Namespace) -> int:
    from . import viewer

    sessions = []
    for name in args.inputs:
        path = Path(name)
        if path.is_dir():
            for file in viewer.trajectory_files(path):
                try:
                    sessions.append(viewer.read_session(file))
                except (viewer.NotATrajectory, OSError) as e:
                    print(f"skipped {e}", file=sys.stderr)
        elif path.is_file():
            try:
                sessions.append(viewer.read_session(path))
            except viewer.NotATrajectory as e:
                raise InputError(str(e)) from None
            except OSError as e:
                raise InputError(f"cannot read {name}: {e.strerror or e}") from None
        else:
            raise InputError(f"{name}: no such file or directory")
    if not sessions:
        raise InputError("no trajectory to show")
    output = Path(args.output) if args.output else _default_view_output(args.inputs)
    try:
        output.write_text(viewer.render(sessions, title=f"agent-lineage: {', '.join(args.inputs)}"), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from None
    print(output)
    if args.open:
        import webbrowser

        webbrowser.open(output.resolve().as_uri())
    return OK


def _default_view_output(inputs: list[str]) -> Path:
    if len(inputs) == 1:
        path = Path(inputs[0])
        return path / "index.html" if path.is_dir() else path.with_suffix(".html")
    raise InputError("several inputs: name the page with -o FILE.html")


def cmd_replay(args: argparse.Namespace) -> int:
    import logging
    import re
    import signal

    from mitmproxy.exceptions import FlowReadException

    from .replay import Capture, ReplayServer  # imports mitmproxy: only this subcommand needs it

    if args.mode != "record" and not args.flows:
        raise InputError(f"--mode {args.mode} answers from saved flows: give at least one FLOWS.mitm")
    for name in args.flows:
        if not Path(name).is_file():
            raise InputError(f"{name}: no such file")
    try:
        ignore = [re.compile(pattern) for pattern in args.ignore]
    except re.error as e:
        raise InputError(f"--ignore: not a regular expression: {e}") from None
    try:
        capture = Capture.from_files(args.flows, ignore)
    except FlowReadException as e:
        raise InputError(f"not a saved flow file ({e})") from None
    record_to = args.write or ("replay-recorded.mitm" if args.mode != "replay" else None)
    try:
        server = ReplayServer(capture, args.listen_host, args.port, args.mode, args.upstream, args.timing, record_to)
    except (ValueError, OSError) as e:
        raise InputError(str(e)) from None
    logging.basicConfig(format="agent-lineage replay: %(message)s", level=logging.INFO, stream=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)  # a plain `kill` ends it like Ctrl-C, with the summary
    print(f"agent-lineage replay: {len(capture.recorded)} recorded requests, mode {args.mode}, timing {args.timing}", file=sys.stderr)
    if record_to:
        print(f"agent-lineage replay: forwarded exchanges go to {record_to}", file=sys.stderr)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"agent-lineage replay: {server.stats.summary()}", file=sys.stderr)
    return INVALID if server.stats.missed else OK


def cmd_kv(args: argparse.Namespace) -> int:
    from . import kv

    if args.workers < 1 or args.cache_tokens < 1:
        raise InputError("--workers and --cache-tokens must be at least 1")
    requests: list[kv.Request] = []
    for name in args.files:
        if name.endswith(".json"):
            requests += kv.from_trajectory(_read_trajectory(name), name)
            continue
        from . import offline  # imports mitmproxy: only flow files need it

        if not Path(name).is_file():
            raise InputError(f"{name}: no such file")
        read = offline.read_flow_file(name)
        if read.problem is not None and not read.flows:
            raise InputError(f"{name}: not a saved flow file ({read.problem})")
        pipeline = Pipeline(Settings(stamp=False), [])
        requests += kv.from_calls(offline.replay(read.flows, pipeline))
        pipeline.close()
    if not requests:
        warn("kv", "no LLM request in the input")
        return OK
    for line in kv.table_lines(kv.report(requests, args.workers, args.cache_tokens, args.seed)):
        print(line)
    return OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import DemoFailed, run  # starts processes: imported only when asked for

    print("demo: a local LLM API imitation on 127.0.0.1, mitmdump with the agent-lineage addon in front of it (reverse mode),")
    print("      and a scripted agent (tool calls, a subagent, two turns) per wire API driven through the proxy:")
    try:
        files = run(Path(args.traces), stream=not args.no_stream)
    except DemoFailed as e:
        raise InputError(str(e)) from None
    if not files:
        error("demo", "no trajectory was written")
        return INVALID
    print(f"\ntrajectories written to {Path(args.traces).resolve()}/:")
    for path in files:
        problems = validate_trajectory(orjson.loads(path.read_bytes()))
        print(f"\n{path}  ({'valid ATIF v1.7' if not problems else f'{len(problems)} validation problems'})")
        for line in summary_lines(shape_of(orjson.loads(path.read_bytes()))):
            print(f"  {line}")
    print("\nnext: agent-lineage summary FILE | agent-lineage validate FILE... | agent-lineage diff A B")
    return OK


# -- helpers ------------------------------------------------------------------------------


class ProgressBar:
    """A one-line `\\r` bar on `stream` while a file is read; nothing unless it is a terminal."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = -1  # percent on screen

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if not self.enabled or percent == self.shown:
            return
        self.shown = percent
        filled = BAR_WIDTH * percent // 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {percent:3d}%")
        self.stream.flush()

    def close(self) -> None:
        if self.shown >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror or e}") from None


def _read_trajectory(name: str) -> dict[str, Any]:
    """A valid trajectory, or an InputError naming its first problem."""
    try:
        document = orjson.loads(_read(name))
    except orjson.JSONDecodeError as e:
        raise InputError(f"{name} is not JSON: {e}") from None
    problems = validate_trajectory(document)
    if problems:
        more = f" (and {len(problems) - 1} more: run `agent-lineage validate`)" if len(problems) > 1 else ""
        raise InputError(f"{name} is not a valid ATIF trajectory: {problems[0]}{more}")
    return document


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
