"""Verifiers for repeated-sampling evaluation (Large Language Monkeys, Brown et al. 2024).

Coverage (pass@k) counts a problem as solved when *some* sample passes an automatic check, so
the checks have to be right, fast and safe to run on thousands of model outputs:

- **Math** (:class:`MathVerifier`): :func:`extract_final_answer` pulls the final answer out of
  a solution, :func:`math_equal` compares it with the reference through math-verify
  (``parse`` + ``verify``: ``1/2 == 0.5 == \\frac{1}{2}``, ``2\\sqrt{2} == \\sqrt{8}``), with a
  plain string/number comparison when math-verify fails.
- **Exact match** (:class:`ExactMatchVerifier`, :func:`exact_match`).
- **Code** (:class:`CodeVerifier`): :func:`run_code_sandboxed` runs a program plus its tests in
  a separate, resource-limited Python process and reports an :class:`ExecutionResult`.

:func:`get_verifier` builds one by name (``"math"``, ``"code"``, ``"exact"``) and
:func:`verify_many` checks many ``(completion, reference)`` pairs, code ones in parallel.

Math-verify timeouts
--------------------
math-verify bounds each parse and comparison with ``signal.alarm``, which only works in the main
thread (its docs: elsewhere pass ``parsing_timeout=None`` and "handle the timeouting
yourself"). :func:`math_equal` therefore

- in the main thread calls math-verify in-process with its own alarm timeouts, and re-arms an
  alarm timer that was already running (pytest-timeout, a harness's own ``setitimer``) after the
  call, since math-verify's ``signal.alarm(0)`` would otherwise cancel it;
- in any other thread sends the comparison to a helper process (one per concurrently calling
  thread, reused, address space capped at 4 GiB) whose main thread runs math-verify with its
  alarm timeouts, and kills that process when no reply arrives within a hard wall-clock deadline
  (``6 * ceil(timeout_s) + 5`` s), so even a computation stuck in C code cannot hang the
  caller. A kill, a crash or any math-verify error falls back to the string/number comparison.

Code sandbox: what it does
--------------------------
:func:`run_code_sandboxed` never executes the program in the calling process. Each run:

- writes ``program + "\\n" + tests`` into a fresh :class:`tempfile.TemporaryDirectory` that is
  the child's working directory, ``HOME`` and ``TMPDIR``, and is deleted afterwards (it is
  left behind only when the harness process itself is killed mid-run);
- starts ``python -I -B -X utf8`` (isolated mode: no ``PYTHON*`` variables, no user site, no
  script directory on ``sys.path``) in a new session, with an environment cut down to
  ``PATH``, ``HOME``, ``TMPDIR``/``TMP``/``TEMP``, a UTF-8 locale and single-threaded BLAS
  (no proxies, no ``PYTHONPATH``, none of the caller's secrets), stdin from ``/dev/null`` (or
  the given text), stdout and stderr captured;
- runs a bootstrap in the child, before the candidate, that sets ``RLIMIT_AS`` (``memory_mb``),
  ``RLIMIT_CPU`` (``ceil(timeout_s) + 1`` s), ``RLIMIT_FSIZE`` (16 MiB per file),
  ``RLIMIT_NOFILE`` (128) and ``RLIMIT_CORE`` (0), arms ``alarm(ceil(timeout_s) + 2)`` so the
  child also dies if the harness itself is killed, and installs a ``sys.addaudithook`` hook
  (event names and arguments checked against CPython 3.11's audit events table) that raises
  ``PermissionError`` in the candidate, and reports the refusal to the harness over a private
  pipe (and to stderr), for

  - networking: every ``socket.*`` event (creation, connect, bind, DNS look-ups);
  - new processes: ``os.fork``, ``os.forkpty``, ``os.posix_spawn``, ``os.exec``,
    ``os.system``, ``subprocess.Popen``, ``pty.spawn``, ``webbrowser.open``, and
    ``_posixsubprocess.fork_exec``, which ``multiprocessing``'s spawn start method calls
    without an audit event (replaced by a refusing function);
  - changes outside the temporary directory: opening a file for writing (write, append,
    create, truncate, ``+``), ``os.remove``/``unlink``, ``os.rename``/``replace``,
    ``os.rmdir``, ``os.mkdir``, ``os.link``, ``os.symlink`` (also a link *to* an outside
    path), ``os.truncate``, ``os.chmod``, ``os.chown``, ``os.utime``, xattr changes,
    ``shutil.rmtree`` and ``sqlite3.connect``, each on a path resolved the way the kernel
    would (symbolic links followed, ``dir_fd`` through ``/proc/self/fd``); ``/dev/null``,
    ``/dev/stdout`` and ``/dev/stderr`` excepted. ``os.mkfifo``/``os.mknod``, which have no
    audit event, are replaced by refusing functions;
  - the harness and the limits: ``os.kill``/``os.killpg`` of anything but the child itself or
    its own process group, ``os.pidfd_open`` (no audit event; replaced),
    ``resource.setrlimit``/``prlimit``, new interpreters (their audit hooks would be empty);
  - the hook itself: ``gc.get_objects``/``get_referrers``/``get_referents`` and assigning
    ``__code__``/``__defaults__``/``__kwdefaults__`` of the bootstrap's functions (which keep
    all their state in default arguments, so patching builtins or modules does not change
    their decisions);
  - native code: every ``ctypes.*`` and ``syslog.*`` event, and importing ``ctypes``,
    ``_ctypes``, ``_posixshmem``, ``_xxsubinterpreters``, ``_testcapi`` or
    ``_testinternalcapi``. A refused import raises ``ImportError`` instead of
    ``PermissionError``, so libraries that merely probe for an optional module (numpy's
    ``try: import ctypes``) keep working; it counts as a refusal only when it ends the
    program;
- on a timeout kills the whole process group with ``SIGKILL`` and reaps the child; after a
  normal exit it kills the group too (while the exited child still holds the group id), so no
  straggler survives a run;
- keeps at most ``max_output_bytes`` of stdout and of stderr each, and appends a note saying
  how much was cut (stdout stays block-buffered for speed, so a program killed on a timeout
  loses what it had not flushed yet).

A run's status: ``"refused"`` if the hook refused anything (even if the program caught the
error), else ``"timeout"`` (wall clock, CPU limit or the child's own alarm), else ``"memory"``
(an uncaught ``MemoryError``, or a ``SIGKILL`` the harness did not send: the kernel's OOM
killer), else ``"passed"`` (exit status 0), ``"failed"`` (non-zero exit: an exception, a failed
assert, a syntax error, ``sys.exit(1)``) or ``"error"`` (the bootstrap never reached the
program, or another signal such as ``SIGSEGV`` ended it).

Code sandbox: what it does NOT guarantee
----------------------------------------
It is a guard against the accidents of model-written code (runaway loops and allocations,
stray writes, forks, network calls), **not a security boundary against a determined
attacker**: there are no namespaces, no seccomp filter, no separate user, no chroot. Audit hooks
live in the same interpreter as the code they watch. Known ways around them include crafting
bytecode or C extensions that reach memory directly, creating a fresh ``_posixsubprocess``
module object through ``importlib`` machinery, racing the path check against a symlink swap
or a path-like object whose ``__fspath__`` changes between calls, and write-opening a
relative path through ``os.open(..., dir_fd=...)`` (the ``open`` event carries no
``dir_fd``). Reading files is not restricted at all (the environment is stripped, but anything
the user can read on disk is readable), nor is CPU use within the time limit. ``RLIMIT_AS``
counts address space, not resident memory, and some runtimes reserve a lot of it. Run
untrusted code you actually fear inside a container or VM (gVisor, nsjail, Firecracker) too.
In the main thread, :func:`math_equal` relies on math-verify's ``signal.alarm``, which
interrupts Python code between bytecodes only: one long computation inside C could overrun it
(none did in testing: huge powers and factorials are kept unevaluated and were interrupted);
off the main thread the helper process is killed, so there it cannot.

``RLIMIT_NPROC`` is deliberately **not** set. The limit would only constrain the child (limits
are per process, so the harness is unaffected), but it counts every task (processes *and*
threads) of the real user across the machine: a value low enough to stop a fork bomb early
makes legitimate candidates fail to start threads whenever the user already runs many tasks
(the harness's own thread pools, concurrent sandboxes, other jobs), a value computed from the
current count is racy, and root (or ``CAP_SYS_RESOURCE``), which is how these evaluations often
run in containers, ignores it entirely. A fork bomb is instead stopped by the refused fork
family, the process-group ``SIGKILL`` and the per-process CPU limit and alarm.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "EXECUTION_STATUSES",
    "VERIFIERS",
    "CodeVerifier",
    "ExactMatchVerifier",
    "ExecutionResult",
    "MathVerifier",
    "exact_match",
    "extract_code",
    "extract_final_answer",
    "get_verifier",
    "math_equal",
    "run_code_sandboxed",
    "verify_many",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Final answers of math solutions
# ---------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE = re.compile(r"\\boxed[ \t]+([^\s$]+)")
_GSM8K_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_MARKER = re.compile(
    r"\banswer(?:\*\*)?[ \t]*(?:is\b[ \t]*:?|:|=)(?:\*\*)?[ \t]*", re.IGNORECASE
)
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])[-+]?\.\d+"
)
_GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CURRENCY_NUMBER = re.compile(r"\\?\$[ \t]*([-+]?[\d.,]+)")
_NUMBER_WITH_UNITS = re.compile(
    r"([-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+))[ \t]+[A-Za-z]{2,}(?:[ \t]+[A-Za-z]{2,})*"
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_TRAILING_PUNCTUATION = ".,;:"


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each ``{`` mapped to its closing ``}`` (escaped braces skipped); linear time."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
        index += 1
    return pairs


def _last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}``, else of ``\\boxed x``."""
    matches = list(_BOXED.finditer(text))
    if matches:
        pairs = _matching_braces(text)
        for match in reversed(matches):
            open_index = match.end() - 1
            if open_index in pairs:
                return text[match.end() : pairs[open_index]]
    bare = _BOXED_BARE.findall(text)
    return bare[-1] if bare else None


def _clean_answer(answer: str) -> str | None:
    """Strip delimiters, emphasis, trailing punctuation, currency signs and thousands commas."""
    text = answer.strip()
    while True:
        before = text
        text = text.strip().strip("*").strip()
        if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
            text = text.strip("$")
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(left) and text.endswith(right) and len(text) >= 4:
                text = text[2:-2]
        text = text.rstrip(_TRAILING_PUNCTUATION)
        if text == before:
            break
    text = text.strip()
    currency = _CURRENCY_NUMBER.fullmatch(text)
    if currency:
        text = currency.group(1).rstrip(_TRAILING_PUNCTUATION)
    units = _NUMBER_WITH_UNITS.fullmatch(text)
    if units:
        text = units.group(1)
    if _GROUPED_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    return text or None


def _after_answer_marker(text: str) -> str | None:
    """What follows the last "answer is" / "answer:" up to the end of its sentence or line."""
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end() :].lstrip()
    line = rest.split("\n", 1)[0]
    return _SENTENCE_END.split(line, maxsplit=1)[0]


def extract_final_answer(text: str) -> str | None:
    """The final answer of a math solution, or None when there is none.

    Looked for in this order, the first that yields a non-empty answer winning:

    1. the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced, so
       ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``; a truncated last box falls back to the
       box before it;
    2. the last GSM8K-style ``#### X`` (the rest of that line);
    3. the last "The answer is X" / "answer: X" (case-insensitive, ``**bold**`` allowed), up
       to the end of that sentence or line (so Minerva's "The final answer is $X$. I hope it is
       correct." gives ``X``);
    4. the last number in the text (``-3``, ``2.5``, ``1,000``, ``3/4``).

    The answer is then cleaned: surrounding ``$...$``/``\\(...\\)``, ``**`` and whitespace,
    trailing ``. , ; :``, a leading currency sign, trailing unit words after a number
    (``18 dollars`` -> ``18``) and thousands separators (``1,000`` -> ``1000``) are removed.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    boxed = _last_boxed(text)
    if boxed is not None:
        cleaned = _clean_answer(boxed)
        if cleaned:
            return cleaned
    gsm8k = [answer for answer in _GSM8K_ANSWER.findall(text) if answer.strip()]
    if gsm8k:
        cleaned = _clean_answer(gsm8k[-1])
        if cleaned:
            return cleaned
    stated = _after_answer_marker(text)
    if stated is not None:
        cleaned = _clean_answer(stated)
        if cleaned:
            return cleaned
    numbers = _NUMBER.findall(text)
    if numbers:
        return _clean_answer(numbers[-1])
    return None


# ---------------------------------------------------------------------------------------------
# Answer comparison
# ---------------------------------------------------------------------------------------------

_LATEX_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right)\b|~")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_WHITESPACE = re.compile(r"\s+")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,4})?")
_SLASH_FRACTION = re.compile(r"([-+]?\d+)/([-+]?\d+)")
_LATEX_FRACTION = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}")
_MAX_NUMBER_CHARS = 200


def _normalize_math(text: str) -> str:
    """A canonical spelling for string comparison: no delimiters, spacing, wrappers, commas."""
    text = text.strip()
    if text.startswith("\\boxed"):
        inner = _last_boxed(text)
        if inner is not None and text.rstrip().endswith("}"):
            text = inner
    text = text.replace("\\$", "").strip().strip("$")
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _LATEX_SPACING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = _WHITESPACE.sub("", text).rstrip(".")
    if _GROUPED_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    return text


def _as_number(text: str) -> Fraction | None:
    """``text`` (already normalised) as an exact number, or None; bounded in size and time."""
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    try:
        if _PLAIN_NUMBER.fullmatch(text):
            return Fraction(text)
        slash = _SLASH_FRACTION.fullmatch(text)
        if slash:
            return Fraction(int(slash.group(1)), int(slash.group(2)))
        latex = _LATEX_FRACTION.fullmatch(text)
        if latex:
            value = Fraction(int(latex.group(2)), int(latex.group(3)))
            return -value if latex.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _fallback_equal(candidate: str, reference: str) -> bool:
    """Normalised string equality, or equality of both as exact numbers."""
    left, right = _normalize_math(candidate), _normalize_math(reference)
    if left == right and left:
        return True
    left_number, right_number = _as_number(left), _as_number(right)
    return left_number is not None and left_number == right_number


def _delimit(text: str) -> str:
    """``text`` as math-verify's LaTeX extractor wants it: inside ``$...$`` unless delimited."""
    text = text.replace("\\$", "")
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _math_verify_compare(candidate: str, reference: str, timeout_s: float) -> bool | None:
    """math-verify's verdict (reference as gold), or None when it cannot parse, errs or times out.

    Must run in a main thread: math-verify bounds each step with ``signal.alarm``.
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    seconds = max(1, math.ceil(timeout_s))
    try:
        gold = parse(_delimit(reference), parsing_timeout=seconds, raise_on_error=True)
        target = parse(_delimit(candidate), parsing_timeout=seconds, raise_on_error=True)
        if not gold or not target:
            return None
        return bool(verify(gold, target, timeout_seconds=seconds, raise_on_error=True))
    except (Exception, TimeoutException):
        logger.debug("math-verify failed on %.80r vs %.80r", candidate, reference, exc_info=True)
        return None


def _keeping_outer_alarm(function: Callable[[], Any]) -> Any:
    """Call ``function`` and re-arm a real-time timer that was running before it.

    math-verify's ``signal.alarm(0)`` cancels any running ``ITIMER_REAL`` (e.g. pytest-timeout's);
    the timer gets its remaining time back afterwards (it fires late if it expired meanwhile).
    """
    if not hasattr(signal, "getitimer"):
        return function()
    delay, interval = signal.getitimer(signal.ITIMER_REAL)
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    try:
        return function()
    finally:
        if delay > 0:
            remaining = delay - (time.monotonic() - started)
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), interval)


# A helper process that runs math-verify in its own main thread. It loads this very file by path
# (not ``import hazyzoo``, which would import torch) and serves one JSON request per line.
_MATH_WORKER_SOURCE = """
import importlib.util, json, sys
hello = json.loads(sys.stdin.readline())
sys.path[:] = hello["sys_path"]
spec = importlib.util.spec_from_file_location("_hazyzoo_math_worker", hello["module"])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module._serve_math_requests()
"""
_MATH_WORKER_MEMORY_BYTES = 4 * 1024**3
_MATH_WORKER_STARTUP_S = 120.0
_MAX_IDLE_MATH_WORKERS = 8


def _serve_math_requests() -> None:
    """Main loop of a math helper process: requests on stdin, replies on the original stdout."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints from libraries must not corrupt the protocol
    os.close(devnull)
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = (
            _MATH_WORKER_MEMORY_BYTES
            if hard == resource.RLIM_INFINITY
            else min(hard, _MATH_WORKER_MEMORY_BYTES)
        )
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    import math_verify  # noqa: F401  (loaded once, before the first request)

    replies.write('{"ready": true}\n')
    for line in sys.stdin:
        try:
            request = json.loads(line)
            equal = _math_verify_compare(
                request["candidate"], request["reference"], request["timeout_s"]
            )
            reply: dict[str, Any] = {"equal": equal}
        except Exception as error:  # a bad request or a crash must not end the worker
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")


class _MathWorker:
    """One helper process running math-verify, with hard deadlines on every exchange."""

    def __init__(self) -> None:
        if not sys.executable:
            raise RuntimeError("sys.executable is empty: cannot start a math-verify process")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _MATH_WORKER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin.fileno()
        self._stdout = self._process.stdout.fileno()
        os.set_blocking(self._stdin, False)
        self._buffer = b""
        search_path = [
            os.fspath(entry) for entry in sys.path if isinstance(entry, (str, os.PathLike))
        ]
        hello = {"sys_path": search_path, "module": os.path.abspath(__file__)}
        deadline = time.monotonic() + _MATH_WORKER_STARTUP_S
        if not self._send(hello, deadline) or self._receive(deadline) != {"ready": True}:
            self.close()
            raise RuntimeError("the math-verify helper process did not start")

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._process.poll() is None

    def compare(
        self, candidate: str, reference: str, timeout_s: float, deadline_s: float | None = None
    ) -> bool | None:
        """The worker's verdict, or None (worker killed) when it is late, dies or cannot decide."""
        if deadline_s is None:
            deadline_s = 6 * max(1, math.ceil(timeout_s)) + 5
        deadline = time.monotonic() + deadline_s
        request = {"candidate": candidate, "reference": reference, "timeout_s": timeout_s}
        reply = self._receive(deadline) if self._send(request, deadline) else None
        if reply is None:
            logger.warning(
                "math-verify helper gave no reply within %.0f s for %.80r; killed it",
                deadline_s,
                candidate,
            )
            self.close()
            return None
        equal = reply.get("equal")
        return equal if isinstance(equal, bool) else None

    def _send(self, message: dict[str, Any], deadline: float) -> bool:
        data = (json.dumps(message) + "\n").encode("ascii")
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _, writable, _ = select.select([], [self._stdin], [], remaining)
            if not writable:
                return False
            try:
                data = data[os.write(self._stdin, data) :]
            except BlockingIOError:
                continue
            except OSError:
                return False
        return True

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._stdout], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(self._stdout, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    def close(self) -> None:
        """Kill the process (if running) and release its pipes."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


_idle_math_workers: list[_MathWorker] = []
_math_workers_lock = threading.Lock()


def _close_idle_math_workers() -> None:
    with _math_workers_lock:
        workers = list(_idle_math_workers)
        _idle_math_workers.clear()
    for worker in workers:
        worker.close()


atexit.register(_close_idle_math_workers)


def _compare_in_worker(candidate: str, reference: str, timeout_s: float) -> bool | None:
    """math-verify's verdict from a helper process (for callers outside the main thread)."""
    with _math_workers_lock:
        worker = _idle_math_workers.pop() if _idle_math_workers else None
    if worker is None:
        try:
            worker = _MathWorker()
        except (OSError, RuntimeError) as error:
            logger.warning("no math-verify helper process (%s); using the fallback", error)
            return None
    result = worker.compare(candidate, reference, timeout_s)
    if worker.alive:
        with _math_workers_lock:
            if len(_idle_math_workers) < _MAX_IDLE_MATH_WORKERS:
                _idle_math_workers.append(worker)
                worker = None
        if worker is not None:
            worker.close()
    return result


_math_verify_checked = False


def _require_math_verify() -> None:
    """Fail with an install hint when math-verify is missing (checked once)."""
    global _math_verify_checked
    if _math_verify_checked:
        return
    import importlib.util

    if importlib.util.find_spec("math_verify") is None:
        raise ImportError(
            "math_equal needs math-verify: pip install 'hazyzoo[eval]' (or 'math-verify>=0.5')"
        )
    _math_verify_checked = True


def _check_timeout(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def math_equal(candidate: str | None, reference: str, *, timeout_s: float = 5.0) -> bool:
    """Whether ``candidate`` is mathematically equal to ``reference`` (both final answers).

    Equal normalised spellings are accepted at once; otherwise both are parsed by math-verify
    (wrapped in ``$...$`` unless already delimited) and compared with ``verify(reference,
    candidate)``. When math-verify cannot parse one of them, raises, or times out (each parse and
    comparison gets ``ceil(timeout_s)`` seconds), the answer falls back to normalised string
    equality or equality as exact numbers. Safe from any thread: see the module docstring for how
    timeouts are enforced outside the main thread. ``candidate=None`` (no answer found) is False.
    """
    if candidate is None:
        return False
    if not isinstance(candidate, str):
        raise TypeError(f"candidate must be a str or None, got {type(candidate).__name__}")
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a str, got {type(reference).__name__}")
    timeout_s = _check_timeout("timeout_s", timeout_s)
    reference = reference.strip()
    if not reference:
        raise ValueError("reference must be a non-empty answer, got an empty string")
    candidate = candidate.strip()
    if not candidate:
        return False
    _require_math_verify()
    if _normalize_math(candidate) == _normalize_math(reference):
        return True
    if threading.current_thread() is threading.main_thread():
        result = _keeping_outer_alarm(lambda: _math_verify_compare(candidate, reference, timeout_s))
    else:
        result = _compare_in_worker(candidate, reference, timeout_s)
    if result is None:
        return _fallback_equal(candidate, reference)
    return result


def exact_match(candidate: str | None, reference: str, *, normalize: bool = True) -> bool:
    """Whether two strings are equal; with ``normalize``, after stripping, case-folding and
    collapsing runs of whitespace into one space. ``candidate=None`` is False."""
    if candidate is None:
        return False
    if not isinstance(candidate, str):
        raise TypeError(f"candidate must be a str or None, got {type(candidate).__name__}")
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a str, got {type(reference).__name__}")
    if not normalize:
        return candidate == reference
    return " ".join(candidate.casefold().split()) == " ".join(reference.casefold().split())


# ---------------------------------------------------------------------------------------------
# Code sandbox
# ---------------------------------------------------------------------------------------------

EXECUTION_STATUSES = ("passed", "failed", "timeout", "memory", "refused", "error")
_MIN_MEMORY_MB = 32
_MAX_FILE_BYTES = 16 * 1024**2
_MAX_OPEN_FILES = 128
_MAX_STATUS_BYTES = 65536
_READ_CHUNK = 65536


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one sandboxed run.

    ``status`` is one of :data:`EXECUTION_STATUSES` (see the module docstring for their
    meaning); ``passed`` is ``status == "passed"``. ``returncode`` is the child's exit status
    (negative: killed by that signal), or None when the harness killed it on a timeout or it never
    started. ``stdout``/``stderr`` hold at most ``max_output_bytes`` of each stream (decoded as
    UTF-8, bad bytes replaced) plus a note when more was cut. ``duration_s`` is wall time.
    """

    passed: bool
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    def __post_init__(self) -> None:
        if self.status not in EXECUTION_STATUSES:
            raise ValueError(f"status must be one of {EXECUTION_STATUSES}, got {self.status!r}")
        if self.passed != (self.status == "passed"):
            raise ValueError(f"passed={self.passed!r} contradicts status={self.status!r}")


# The first code the child runs (``python -I -B -X utf8 -c _BOOTSTRAP <limits...>``): it sets
# the resource limits, replaces the unaudited process/pidfd/fifo functions, installs the audit
# hook and runs the candidate as ``__main__``. Every helper keeps its state in default arguments
# (a tuple that cannot be reassigned once the hook refuses ``__defaults__``), never in globals,
# builtins or closures that the candidate could reach and rewrite.
_BOOTSTRAP = r'''
import builtins
import os
import posix
import resource
import signal
import stat
import sys
import types

import _posixsubprocess

_IMPORT_REFUSAL = "hazyzoo sandbox refused importing "


def _refusal(event, detail, status_fd, _write=posix.write, _PermissionError=PermissionError,
             _OSError=OSError):
    message = "hazyzoo sandbox refused " + event + (": " + detail if detail else "")
    try:
        _write(status_fd, ("refused " + event + "\n").encode("utf-8", "replace"))
    except _OSError:
        pass
    try:
        _write(2, (message + "\n").encode("utf-8", "replace"))
    except _OSError:
        pass
    return _PermissionError(message)


def _resolve(path, dir_fd, _fspath=posix.fspath, _getcwd=posix.getcwd, _readlink=posix.readlink,
             _lstat=posix.lstat, _islink=stat.S_ISLNK, _isinstance=isinstance, _bytes=bytes,
             _int=int, _OSError=OSError):
    """The absolute path, symbolic links followed, that path names (None if it cannot tell)."""
    try:
        text = _fspath(path)
        if _isinstance(text, _bytes):
            text = text.decode("utf-8", "surrogateescape")
        if not text.startswith("/"):
            if dir_fd is None or dir_fd == -1:
                base = _getcwd()
            elif _isinstance(dir_fd, _int):
                base = _readlink("/proc/self/fd/%d" % dir_fd)
            else:
                return None
            text = base + "/" + text
        pending = [part for part in text.split("/") if part][::-1]
        resolved = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            current = "/" + "/".join(resolved + [part])
            try:
                mode = _lstat(current).st_mode
            except _OSError:
                resolved.append(part)
                continue
            if _islink(mode):
                hops += 1
                if hops > 40:
                    return None
                target = _readlink(current)
                if target.startswith("/"):
                    resolved = []
                pending.extend([part for part in target.split("/") if part][::-1])
            else:
                resolved.append(part)
        return "/" + "/".join(resolved)
    except Exception:
        return None


def _inside(path, dir_fd, root, _resolve=_resolve, _isinstance=isinstance, _int=int, _str=str,
            _special=frozenset(("/dev/null", "/dev/stdout", "/dev/stderr"))):
    """(allowed, resolved path) for a path that is about to be written."""
    if _isinstance(path, _int):
        return True, "fd %d" % path  # an open descriptor: vetted when it was opened
    if _isinstance(path, _str) and path in _special:
        return True, path
    resolved = _resolve(path, dir_fd)
    if resolved is None:
        return False, "an unresolvable path"
    return (resolved == root or resolved.startswith(root + "/") or resolved in _special), resolved


_PATH_EVENTS = {
    # event: ((path argument, dir_fd argument or None), ...), per CPython 3.11's audit table
    "os.mkdir": ((0, 2),),
    "os.rmdir": ((0, 1),),
    "os.remove": ((0, 1),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
}
_DENIED = frozenset((
    "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "os.startfile",
    "subprocess.Popen", "pty.spawn", "webbrowser.open", "resource.setrlimit",
    "cpython.PyInterpreterState_New", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents",
))
_DENIED_PREFIXES = ("socket.", "ctypes.", "syslog.")
_REFUSED_IMPORTS = frozenset((
    "ctypes", "_ctypes", "_posixshmem", "_xxsubinterpreters", "_testcapi", "_testinternalcapi",
))
_GUARDED_ATTRIBUTES = frozenset(("__code__", "__defaults__", "__kwdefaults__"))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _make_hook(root, status_fd, own_functions):
    """The audit hook; own_functions (the bootstrap's helpers) may not be rewritten."""

    def hook(event, args, _root=root, _fd=status_fd, _inside=_inside, _refusal=_refusal,
             _path_events=types.MappingProxyType(dict(_PATH_EVENTS)), _denied=_DENIED,
             _prefixes=_DENIED_PREFIXES, _imports=_REFUSED_IMPORTS,
             _guarded=_GUARDED_ATTRIBUTES, _flags=_WRITE_FLAGS, _getpid=posix.getpid,
             _pgrp=posix.getpgrp(), _isinstance=isinstance, _str=str, _bytes=bytes, _int=int,
             _type=type, _function=types.FunctionType, _len=len, _ImportError=ImportError,
             _prefix=_IMPORT_REFUSAL, _write=posix.write, _repr=repr, _own_codes=None):
        if event == "open":
            path, mode, flags = args[0], args[1], args[2] if _len(args) > 2 else 0
            writing = (_isinstance(flags, _int) and flags & _flags) or (
                _isinstance(mode, _str) and ("w" in mode or "a" in mode or "x" in mode
                                             or "+" in mode))
            if writing:
                allowed, where = _inside(path, None, _root)
                if not allowed:
                    raise _refusal("open", "writing " + where, _fd)
            return
        if event == "import":
            name = args[0]
            if _isinstance(name, _str) and name.partition(".")[0] in _imports:
                raise _ImportError(_prefix + _repr(name), name=name)
            return
        if event in _path_events:
            for path_index, fd_index in _path_events[event]:
                dir_fd = None if fd_index is None else args[fd_index]
                allowed, where = _inside(args[path_index], dir_fd, _root)
                if not allowed:
                    raise _refusal(event, where, _fd)
            return
        if event == "os.symlink":
            allowed, link = _inside(args[1], args[2], _root)
            if not allowed:
                raise _refusal(event, link, _fd)
            target = args[0]
            if _isinstance(target, _bytes):
                target = target.decode("utf-8", "surrogateescape")
            if not _isinstance(target, _str):
                raise _refusal(event, "a link target that is not a str or bytes", _fd)
            if not target.startswith("/"):
                target = link.rpartition("/")[0] + "/" + target
            allowed, where = _inside(target, None, _root)
            if not allowed:
                raise _refusal(event, "a link to " + where, _fd)
            return
        if event == "sqlite3.connect":
            database = args[0]
            if _isinstance(database, _str) and (database == ":memory:" or database == ""):
                return
            if _isinstance(database, _str) and database.startswith("file:"):
                raise _refusal(event, "a URI database", _fd)
            allowed, where = _inside(database, None, _root)
            if not allowed:
                raise _refusal(event, where, _fd)
            return
        if event == "os.kill" or event == "os.killpg":
            own = _getpid() if event == "os.kill" else _pgrp
            if args[0] != own and args[0] != 0:
                raise _refusal(event, "%s %d" % ("pid" if event == "os.kill" else "group",
                                                 args[0]), _fd)
            try:  # so that a SIGKILL it sends itself is not taken for the OOM killer
                _write(_fd, b"self-signal\n")
            except OSError:
                pass
            return
        if event == "resource.prlimit":
            if _len(args) > 2 and args[2] is not None:
                raise _refusal(event, "", _fd)
            return
        if event == "object.__setattr__" or event == "object.__delattr__":
            if (_type(args[0]) is _function and args[1] in _guarded
                    and args[0].__code__ in _own_codes):
                raise _refusal(event, args[1], _fd)
            return
        if event in _denied or event.startswith(_prefixes):
            raise _refusal(event, "", _fd)

    # Set before the hook is installed, so not audited: the code objects that must stay ours.
    codes = frozenset([hook.__code__] + [function.__code__ for function in own_functions])
    hook.__defaults__ = hook.__defaults__[:-1] + (codes,)
    return hook


def _refusing(name, status_fd, _refusal=_refusal):
    def refused(*args, **kwargs):
        raise _refusal(name, "", status_fd)

    return refused


def _refused_import(error, _isinstance=isinstance, _ImportError=ImportError, _str=str):
    for _ in range(64):
        if error is None:
            return None
        if _isinstance(error, _ImportError) and _str(error.msg or "").startswith(_IMPORT_REFUSAL):
            return error.name
        error = error.__cause__ or error.__context__
    return None


def _main():
    memory, cpu, file_size, open_files, alarm, status_fd, root, solution = sys.argv[1:9]
    status_fd = int(status_fd)
    for which, soft, hard in (
        (resource.RLIMIT_AS, int(memory), int(memory)),
        (resource.RLIMIT_CPU, int(cpu), int(cpu) + 1),
        (resource.RLIMIT_FSIZE, int(file_size), int(file_size)),
        (resource.RLIMIT_NOFILE, int(open_files), int(open_files)),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))
    signal.alarm(int(alarm))
    with open(solution, encoding="utf-8") as handle:
        source = handle.read()

    own = [_refusal, _resolve, _inside, _refusing]
    _posixsubprocess.fork_exec = _refusing("_posixsubprocess.fork_exec", status_fd)
    own.append(_posixsubprocess.fork_exec)
    for name in ("mkfifo", "mknod", "pidfd_open"):
        if hasattr(posix, name):
            replacement = _refusing("os." + name, status_fd)
            setattr(posix, name, replacement)
            setattr(os, name, replacement)
            own.append(replacement)

    main = types.ModuleType("__main__")
    main.__file__ = solution
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [solution]
    hook = _make_hook(root, status_fd, own)
    sys.addaudithook(hook)
    del hook, own
    posix.write(status_fd, b"started\n")
    try:
        exec(compile(source, solution, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        refused = _refused_import(error)
        if refused is not None:
            line = "refused import " + refused + "\n"
        elif isinstance(error, MemoryError):
            line = "memory\n"
        else:
            line = ""
        if line:
            try:
                posix.write(status_fd, line.encode("utf-8", "replace"))
            except OSError:
                pass
        # Report it as an uncaught exception would be, without the bootstrap's own frames.
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename == "<string>":
            trace = trace.tb_next
        sys.excepthook(type(error), error.with_traceback(trace), trace)
        raise SystemExit(1) from None


try:
    _main()
except MemoryError:
    try:
        posix.write(int(sys.argv[6]), b"memory\n")
    except OSError:
        pass
    raise
'''


def _check_sandbox_limits(
    timeout_s: Any, memory_mb: Any, max_output_bytes: Any, python: Any
) -> tuple[float, int, int, str]:
    """Validated limits and the interpreter's path; clear errors for bad values."""
    timeout_s = _check_timeout("timeout_s", timeout_s)
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise TypeError(f"memory_mb must be an int (MiB), got {type(memory_mb).__name__}")
    if memory_mb < _MIN_MEMORY_MB:
        raise ValueError(
            f"memory_mb must be at least {_MIN_MEMORY_MB} (MiB; the interpreter needs it), "
            f"got {memory_mb}"
        )
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int):
        raise TypeError(f"max_output_bytes must be an int, got {type(max_output_bytes).__name__}")
    if max_output_bytes < 0:
        raise ValueError(f"max_output_bytes must be >= 0, got {max_output_bytes}")
    if python is None:
        if not sys.executable:
            raise ValueError("python=None needs sys.executable, which is empty here")
        interpreter = sys.executable
    else:
        if not isinstance(python, (str, os.PathLike)):
            raise TypeError(f"python must be a path or None, got {type(python).__name__}")
        found = shutil.which(os.fspath(python))
        if found is None:
            raise ValueError(f"python must name an executable interpreter, got {python!r}")
        interpreter = found
    return timeout_s, memory_mb, max_output_bytes, interpreter


class _Capture:
    """The first ``limit`` bytes of a stream, and how many bytes it carried in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    def text(self, name: str) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.total > len(self.kept):
            text += (
                f"\n[hazyzoo sandbox: {name} truncated to its first {len(self.kept)} of "
                f"{self.total} bytes (max_output_bytes={self.limit})]"
            )
        return text


def _sandbox_environment(root: str) -> dict[str, str]:
    """The child's whole environment: no proxies, no PYTHONPATH, none of the caller's secrets."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": root,
        "TMPDIR": root,
        "TMP": root,
        "TEMP": root,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its group id stays taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(*, lines: list[str], timed_out: bool, returncode: int | None) -> str:
    """The run's status from the bootstrap's reports, the deadline and the exit status."""
    if any(line.startswith("refused") for line in lines):
        return "refused"
    killed_by = -returncode if returncode is not None and returncode < 0 else None
    if timed_out or killed_by in (signal.SIGXCPU, signal.SIGALRM):
        return "timeout"
    if "memory" in lines or (killed_by == signal.SIGKILL and "self-signal" not in lines):
        return "memory"
    if "started" not in lines:
        return "error"
    if returncode == 0:
        return "passed"
    if returncode is not None and returncode > 0:
        return "failed"
    return "error"


def run_code_sandboxed(
    program: str,
    *,
    tests: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 65536,
    python: str | None = None,
    stdin: str | None = None,
) -> ExecutionResult:
    """Run ``program + "\\n" + tests`` in a separate, limited Python process.

    ``timeout_s`` is the wall-clock limit (interpreter start-up included), ``memory_mb`` the
    child's address-space limit, ``max_output_bytes`` how much of stdout and of stderr is kept
    (each), ``python`` the interpreter (default: ``sys.executable``), ``stdin`` text fed to the
    program's standard input (default: empty). What the sandbox does and does not guarantee is
    in the module docstring. Needs a POSIX system (Linux for the full set of checks).
    """
    if not isinstance(program, str):
        raise TypeError(f"program must be a str, got {type(program).__name__}")
    if not isinstance(tests, str):
        raise TypeError(f"tests must be a str, got {type(tests).__name__}")
    if stdin is not None and not isinstance(stdin, str):
        raise TypeError(f"stdin must be a str or None, got {type(stdin).__name__}")
    timeout_s, memory_mb, max_output_bytes, interpreter = _check_sandbox_limits(
        timeout_s, memory_mb, max_output_bytes, python
    )
    if os.name != "posix":
        raise RuntimeError(
            f"run_code_sandboxed needs a POSIX system (resource limits, process groups); "
            f"this is os.name={os.name!r}"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hazyzoo-sandbox-") as directory:
        root = os.path.realpath(directory)
        solution = os.path.join(root, "solution.py")
        with open(solution, "w", encoding="utf-8") as handle:
            handle.write(program + "\n" + tests)
        stdin_file = None
        if stdin is not None:
            stdin_path = os.path.join(root, "stdin.txt")
            with open(stdin_path, "w", encoding="utf-8") as handle:
                handle.write(stdin)
            stdin_file = open(stdin_path, "rb")  # closed below, once the child has it
        status_read, status_write = os.pipe()
        seconds = math.ceil(timeout_s)
        command = [
            interpreter,
            "-I",
            "-B",
            "-X",
            "utf8",
            "-c",
            _BOOTSTRAP,
            str(memory_mb * 1024**2),
            str(seconds + 1),
            str(_MAX_FILE_BYTES),
            str(_MAX_OPEN_FILES),
            str(seconds + 2),
            str(status_write),
            root,
            solution,
        ]
        try:
            process = subprocess.Popen(
                command,
                cwd=root,
                env=_sandbox_environment(root),
                stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_write,),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            os.close(status_read)
            return ExecutionResult(
                passed=False,
                status="error",
                returncode=None,
                stdout="",
                stderr=f"hazyzoo sandbox could not start {interpreter}: {error}",
                duration_s=time.monotonic() - started,
            )
        finally:
            os.close(status_write)
            if stdin_file is not None:
                stdin_file.close()
        try:
            result = _supervise(process, status_read, started + timeout_s, max_output_bytes)
        finally:
            os.close(status_read)
    lines, timed_out, stdout, stderr = result
    returncode = None if timed_out else process.returncode
    status = _status(lines=lines, timed_out=timed_out, returncode=returncode)
    return ExecutionResult(
        passed=status == "passed",
        status=status,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        duration_s=time.monotonic() - started,
    )


def _supervise(
    process: subprocess.Popen, status_read: int, deadline: float, max_output_bytes: int
) -> tuple[list[str], bool, str, str]:
    """Collect output until the child ends or the deadline passes; kill its group; reap it."""
    assert process.stdout is not None and process.stderr is not None
    stdout_fd, stderr_fd = process.stdout.fileno(), process.stderr.fileno()
    captures = {
        stdout_fd: _Capture(max_output_bytes),
        stderr_fd: _Capture(max_output_bytes),
        status_read: _Capture(_MAX_STATUS_BYTES),
    }
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in captures:
            selector.register(fd, selectors.EVENT_READ)
        try:
            # Read while any stream is open, then wait for the exit itself (a child may close
            # its streams and keep running).
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if not selector.get_map():
                    if _exited(process.pid):
                        break
                    time.sleep(min(0.01, remaining))
                    continue
                for key, _ in selector.select(min(remaining, 0.5)):
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        captures[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
        finally:
            # The child is exited-but-unreaped (or still running): its pid keeps naming the
            # group, so this reaches exactly the sandbox's processes.
            _kill_group(process.pid)
            process.wait()
            # Whatever the killed processes had written is still in the pipes.
            while selector.get_map():
                events = selector.select(0.1)
                if not events:
                    break
                for key, _ in events:
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        captures[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
            process.stdout.close()
            process.stderr.close()
    lines = captures[status_read].kept.decode("utf-8", errors="replace").splitlines()
    return lines, timed_out, captures[stdout_fd].text("stdout"), captures[stderr_fd].text("stderr")


# ---------------------------------------------------------------------------------------------
# Verifiers
# ---------------------------------------------------------------------------------------------

# Fences pair up in order (an opening fence's block runs to the next fence, or to the end of the
# text when generation stopped inside it), so a closing fence is never read as an opening one.
_FENCED_BLOCK = re.compile(r"```[ \t]*([^\s`]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset({"python", "python3", "py"})


def extract_code(text: str) -> str:
    """The program in a model's completion.

    The first fenced block tagged ``python``/``python3``/``py`` (an unclosed one runs to the end
    of the text); else the first untagged fenced block; else the whole text. Blocks tagged with
    another language are never picked.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    blocks = [(tag.lower(), body) for tag, body in _FENCED_BLOCK.findall(text)]
    for tag, body in blocks:
        if tag in _PYTHON_TAGS:
            return body
    for tag, body in blocks:
        if not tag:
            return body
    return text


class MathVerifier:
    """``(completion, gt_answer) -> bool``: the completion's final answer equals the reference.

    The answer is :func:`extract_final_answer` of the completion, compared by :func:`math_equal`.
    A reference that is itself a full solution (contains ``\\boxed{`` or ``####``) is reduced to
    its final answer first, so MATH solutions and GSM8K answers can be passed as they are.
    """

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = _check_timeout("timeout_s", timeout_s)

    def check(self, completion: str, gt_answer: str) -> tuple[bool, str | None]:
        """(correct, the extracted answer or None)."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a str, got {type(completion).__name__}")
        if not isinstance(gt_answer, str):
            raise TypeError(f"gt_answer must be a str, got {type(gt_answer).__name__}")
        reference = gt_answer
        if "\\boxed" in gt_answer or "####" in gt_answer:
            reference = extract_final_answer(gt_answer) or gt_answer
        answer = extract_final_answer(completion)
        return math_equal(answer, reference, timeout_s=self.timeout_s), answer

    def __call__(self, completion: str, gt_answer: str) -> bool:
        return self.check(completion, gt_answer)[0]

    def __repr__(self) -> str:
        return f"MathVerifier(timeout_s={self.timeout_s})"


class ExactMatchVerifier:
    """``(completion, reference) -> bool`` by :func:`exact_match` of the whole completion."""

    def __init__(self, *, normalize: bool = True) -> None:
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        self.normalize = normalize

    def __call__(self, completion: str, reference: str) -> bool:
        return exact_match(completion, reference, normalize=self.normalize)

    def __repr__(self) -> str:
        return f"ExactMatchVerifier(normalize={self.normalize})"


class CodeVerifier:
    """``(completion, tests) -> bool``: the completion's program passes the test code.

    The program is :func:`extract_code` of the completion; it runs with ``tests`` appended
    (asserts, a ``check(candidate)`` call, ...) in :func:`run_code_sandboxed` under the limits
    given here. :meth:`run` returns the full :class:`ExecutionResult`.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        max_output_bytes: int = 65536,
        python: str | None = None,
    ) -> None:
        self.timeout_s, self.memory_mb, self.max_output_bytes, _ = _check_sandbox_limits(
            timeout_s, memory_mb, max_output_bytes, python
        )
        self.python = python

    def run(self, completion: str, tests: str) -> ExecutionResult:
        """Run the completion's program with ``tests`` and return what happened."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a str, got {type(completion).__name__}")
        return run_code_sandboxed(
            extract_code(completion),
            tests=tests,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_output_bytes=self.max_output_bytes,
            python=self.python,
        )

    def __call__(self, completion: str, tests: str) -> bool:
        return self.run(completion, tests).passed

    def __repr__(self) -> str:
        return (
            f"CodeVerifier(timeout_s={self.timeout_s}, memory_mb={self.memory_mb}, "
            f"max_output_bytes={self.max_output_bytes}, python={self.python!r})"
        )


VERIFIERS: dict[str, type] = {
    "math": MathVerifier,
    "code": CodeVerifier,
    "exact": ExactMatchVerifier,
}


def get_verifier(name: str, **options: Any) -> Callable[[str, str], bool]:
    """A verifier by name (``"math"``, ``"code"``, ``"exact"``), built with ``options``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in VERIFIERS:
        raise ValueError(f"name must be one of {sorted(VERIFIERS)}, got {name!r}")
    return VERIFIERS[name](**options)


def verify_many(
    verifier: Callable[[str, str], bool],
    items: Iterable[tuple[str, str]],
    *,
    num_workers: int | None = None,
    progress: bool = False,
) -> list[bool]:
    """``verifier(completion, reference)`` for every pair, results in input order.

    With ``num_workers > 1`` the calls run in a thread pool; each code verification is still its
    own sandboxed process and math ones stay safe off the main thread. The default is
    ``min(8, cpu count)`` workers for a :class:`CodeVerifier` (waiting on subprocesses) and 1
    (in the calling thread) for anything else. ``progress`` shows a tqdm bar.
    """
    if not callable(verifier):
        raise TypeError(f"verifier must be callable, got {type(verifier).__name__}")
    pairs = list(items)
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"items[{index}] must be a (completion, reference) pair, got {pair!r:.80}"
            )
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if isinstance(verifier, CodeVerifier) else 1
    if isinstance(num_workers, bool) or not isinstance(num_workers, int):
        raise TypeError(f"num_workers must be an int, got {type(num_workers).__name__}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="verifying")
    try:
        if num_workers == 1 or len(pairs) <= 1:
            results = []
            for completion, reference in pairs:
                results.append(bool(verifier(completion, reference)))
                if bar is not None:
                    bar.update(1)
            return results
        from concurrent.futures import ThreadPoolExecutor, as_completed

        results_by_index: dict[int, bool] = {}
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            futures = {
                pool.submit(verifier, completion, reference): index
                for index, (completion, reference) in enumerate(pairs)
            }
            for future in as_completed(futures):
                results_by_index[futures[future]] = bool(future.result())
                if bar is not None:
                    bar.update(1)
        return [results_by_index[index] for index in range(len(pairs))]
    finally:
        if bar is not None:
            bar.close()
