"""Threads and interpreters: one home for "how many threads may a simulation use" and "run this
in the MLIP's own Python environment".

Heavy ML stacks conflict (torch, TensorFlow and e3nn pins), so an MLIP may be registered with
an interpreter of its own (``glassbench mlip add --python``); the runner and the campaign
workers then execute its runs there, with the same database. Nothing here imports torch: it is
touched only when the process has already loaded it.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glassbench.errors import Failure

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
# Idle OpenMP threads sleep instead of spinning. With more threads than free cores, spinning
# threads steal the cores the working ones wait for (benchmarks/README.md, "Threads").
# libgomp and Intel's OpenMP read this once, when they load: it must be in the environment
# before torch is imported, so it is set for child processes and, here, only for later loads.
WAIT_POLICY = "PASSIVE"


def _read_cpu_max(folder: Path) -> int | None:
    try:
        fields = (folder / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if period > 0 else None


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Whole cores allowed by a cgroup v2 CPU quota (``cpu.max``) of this process's cgroup or
    any ancestor, rounded up; None when there is none (or no cgroup v2 to read).

    A container started with ``--cpus`` keeps every host core in its affinity mask, so the mask
    alone would give it one thread per host core.
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None
    node = root / rel.strip().lstrip("/")
    limits: list[int] = []
    while True:
        cores = _read_cpu_max(node)
        if cores is not None:
            limits.append(cores)
        if node == root or root not in node.parents:
            break
        node = node.parent
    return min(limits) if limits else None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity mask, capped by a cgroup CPU quota.

    The default thread count: ``taskset``, Slurm and container limits narrow it, where a count
    of the machine's cores would start threads that only wait for a core.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(cores, quota) if quota is not None else cores)


def default_threads() -> int:
    """Threads when nobody chose: ``OMP_NUM_THREADS`` if set (the user's), else `available_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cores()


def prefer_passive_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` in this process's environment unless the user set it.

    Effective for torch only when called before torch is imported (the start of a command);
    later calls still give it to child processes.
    """
    os.environ.setdefault(WAIT_POLICY_VARIABLE, WAIT_POLICY)


def limit_threads(threads: int | None, *, override: bool = True) -> None:
    """Keep this process on ``threads`` threads (OpenMP, MKL, OpenBLAS and torch).

    ``override=False`` keeps thread variables the user set explicitly. ``None`` or 0 means the
    default: `default_threads`, put in the environment (never over the user's variables) when
    torch is not loaded yet; a torch already loaded keeps the count it has, which its importer
    chose. Either way ``OMP_WAIT_POLICY`` becomes ``PASSIVE`` unless the user set it: it takes
    effect for torch if torch loads after this call, and for child processes.
    """
    prefer_passive_wait()
    torch = sys.modules.get("torch")
    if not threads:
        if torch is None:
            count = str(default_threads())
            for var in THREAD_VARIABLES:
                os.environ.setdefault(var, count)
        return
    for var in THREAD_VARIABLES:
        if override:
            os.environ[var] = str(threads)
        else:
            os.environ.setdefault(var, str(threads))
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def same_environment(python: str | None) -> bool:
    """True when ``python`` is (an interpreter of) the environment running this process.

    Not resolved through symlinks: every venv's python links to the same base interpreter,
    so the venv is identified by the path's ``bin/..``, which is ``sys.prefix`` inside it.
    """
    if not python:
        return True
    p = Path(python).absolute()
    return p == Path(sys.executable).absolute() or p.parent.parent == Path(sys.prefix).absolute()


def child_environment(
    *,
    threads: int | None = None,
    extra: Mapping[str, str] | None = None,
    override: bool = True,
) -> dict[str, str]:
    """The environment of a child interpreter: its own packages, this run's thread limit.

    ``threads`` sets the thread variables (``override=False``: only those not already set, as
    in `limit_threads`). Without it they are inherited as they are, and a child without them
    picks its default (`limit_threads`) from the cores it may use, an affinity it inherits.
    ``OMP_WAIT_POLICY`` is ``PASSIVE`` unless this process's environment sets it.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the child must use its own environment's packages
    if threads:
        for var in THREAD_VARIABLES:
            if override or var not in env:
                env[var] = str(threads)
    env.setdefault(WAIT_POLICY_VARIABLE, WAIT_POLICY)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def run_in_interpreter(
    python: str,
    args: Sequence[str],
    *,
    stdin: str | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    override_threads: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m glassbench...`` (``args`` follow ``-m``) in another environment.

    Secrets (a database URL with its password) travel through ``stdin`` or ``env``, never
    through ``args``, which ``ps`` shows to every user of the machine. ``threads`` and
    ``override_threads`` are `child_environment`'s ``threads`` and ``override``.
    """
    return subprocess.run(
        [python, "-m", *args],
        input=stdin,
        capture_output=capture,
        text=True,
        env=child_environment(threads=threads, extra=env, override=override_threads),
        check=False,
    )


# What an error message quotes of a child's stderr: its last lines, each cut short, so that a
# child that printed megabytes (a traceback loop, a progress bar) still gives one short line.
TAIL_LINES = 5
TAIL_LINE_CHARS = 200
_TAIL_BYTES = 8192


@dataclass(frozen=True)
class ChildExit:
    """How a child interpreter ended: its exit status (negative: the signal that killed it),
    whether it ran out of time, and the end of what it wrote to stderr."""

    status: int
    stderr_tail: bytes
    timed_out_s: float | None = None

    def last_lines(self) -> list[str]:
        """Up to `TAIL_LINES` non-empty lines of stderr (progress bars redraw with ``\\r``)."""
        text = self.stderr_tail.decode("utf-8", errors="replace")
        lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
        lines = [ln for ln in lines if ln][-TAIL_LINES:]
        return [
            ln if len(ln) <= TAIL_LINE_CHARS else ln[: TAIL_LINE_CHARS - 3] + "..." for ln in lines
        ]

    def how(self) -> str:
        """How it ended: ``exited with status 1``, ``was killed by signal 9 (SIGKILL)``."""
        if self.timed_out_s is not None:
            return f"did not finish within {self.timed_out_s:g} s (killed)"
        if self.status < 0:
            try:
                name = signal.Signals(-self.status).name
            except ValueError:
                name = "an unknown signal"
            return f"was killed by signal {-self.status} ({name})"
        return f"exited with status {self.status}"

    def last_words(self) -> str:
        """``; its last stderr lines: 'a' | 'b'``, or that it wrote nothing to stderr."""
        lines = self.last_lines()
        if not lines:
            return "; it wrote nothing to stderr"
        return "; its last stderr lines: " + " | ".join(repr(ln) for ln in lines)

    def describe(self) -> str:
        """One line: ``exited with status 1; its last stderr lines: 'a' | 'b'``."""
        return self.how() + self.last_words()


def _stderr_sink() -> Callable[[bytes], None]:
    """Write bytes to this process's stderr as they come (a text stream without a buffer,
    as under a test runner, gets them decoded)."""
    stream = sys.stderr
    buffer = getattr(stream, "buffer", None)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(chunk: bytes) -> None:
        try:
            if buffer is not None:
                stream.flush()
                buffer.write(chunk)
                buffer.flush()
            else:
                stream.write(decoder.decode(chunk))
                stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the child
            pass

    return write


def run_child(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    echo_stderr: bool = True,
    quiet_stdout: bool = False,
    timeout_s: float | None = None,
    grace_s: float = 5.0,
) -> ChildExit:
    """Run ``argv``, keeping the end of its stderr for an error message.

    Its stderr goes through a pipe: forwarded to this process's stderr as it arrives
    (``echo_stderr``), and its last 8 KiB kept, so a child that fails before it could report
    anything is explained by its own last words in bounded memory. Its stdout is this
    process's (or discarded, ``quiet_stdout``). Interrupted here (Ctrl-C reaches the child
    too), the child gets ``grace_s`` to finish before it is killed.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if quiet_stdout else None,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
        )
    except OSError as exc:
        raise Failure(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    tail = bytearray()
    sink = _stderr_sink() if echo_stderr else None
    assert proc.stderr is not None

    def pump(fd: int) -> None:
        try:
            while chunk := os.read(fd, 65536):
                tail.extend(chunk)
                del tail[:-_TAIL_BYTES]
                if sink is not None:
                    sink(chunk)
        except OSError:  # the pipe went away: nothing more to read
            pass

    reader = threading.Thread(target=pump, args=(proc.stderr.fileno(),), daemon=True)
    reader.start()
    timed_out = None
    try:
        if stdin is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(stdin.encode("utf-8"))
                proc.stdin.close()
            except BrokenPipeError:  # it exited without reading: its status says why
                pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = timeout_s
            proc.kill()
            proc.wait()
    except BaseException:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        # The pipe closes when the child and any grandchild holding it exit; a grandchild that
        # keeps it open must not hang this process.
        reader.join(timeout=grace_s)
        if not reader.is_alive():
            proc.stderr.close()
    return ChildExit(proc.returncode, bytes(tail), timed_out)


# Importing this module is what a delegated call does first in the child.
_IMPORT_PROBE = "import glassbench.runners.delegation"
INTERPRETER_CHECK_TIMEOUT_S = 60.0


def interpreter_problem(python: str | os.PathLike[str]) -> str | None:
    """Why ``python`` cannot run glassbench, as the end of a sentence about it ("is not
    executable"); None when it can.

    It must be an executable file that imports glassbench (what the delegated runs need); an
    interpreter of this environment is taken as it is.
    """
    p = Path(python)
    if not p.exists():
        return "does not exist"
    if p.is_dir():
        return "is a directory, not an interpreter"
    if not os.access(p, os.X_OK):
        return "is not executable"
    if same_environment(str(python)):
        return None
    try:
        ended = run_child(
            [str(p.absolute()), "-c", _IMPORT_PROBE],
            env=child_environment(),
            echo_stderr=False,
            quiet_stdout=True,
            timeout_s=INTERPRETER_CHECK_TIMEOUT_S,
        )
    except Failure as exc:
        return exc.detail
    if ended.status == 0 and ended.timed_out_s is None:
        return None
    return f"cannot import glassbench (`-c '{_IMPORT_PROBE}'` {ended.describe()})"
