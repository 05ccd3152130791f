"""The code sandbox: hostile programs are stopped or refused and the harness survives them."""

from __future__ import annotations

import os
import select
import socket
import sys
from pathlib import Path

import pytest

from hazyzoo.evaluation.verifiers import (
    CodeVerifier,
    ExecutionResult,
    run_code_sandboxed,
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the sandbox's checks are written for Linux"
)

HARNESS_PID = os.getpid()


def _processes_in(directory: str) -> list[str]:
    """Processes whose working directory is (under) ``directory``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(directory):
                found.append(entry)
    return found


def test_a_correct_program_passes_its_asserts() -> None:
    result = run_code_sandboxed(
        "def add(a, b):\n    return a + b", tests="assert add(2, 3) == 5\nprint('ok')"
    )
    assert isinstance(result, ExecutionResult)
    assert (result.passed, result.status, result.returncode) == (True, "passed", 0)
    assert result.stdout == "ok\n"
    assert result.duration_s > 0


def test_a_wrong_program_fails() -> None:
    result = run_code_sandboxed("def add(a, b):\n    return a - b", tests="assert add(2, 3) == 5")
    assert (result.passed, result.status, result.returncode) == (False, "failed", 1)
    assert "AssertionError" in result.stderr
    assert "solution.py" in result.stderr and "<string>" not in result.stderr


def test_syntax_errors_and_exit_codes_are_failures() -> None:
    assert run_code_sandboxed("def f(:").status == "failed"
    result = run_code_sandboxed("import sys\nsys.exit(3)")
    assert (result.status, result.returncode) == ("failed", 3)


def test_infinite_loop_times_out() -> None:
    result = run_code_sandboxed("while True:\n    pass", timeout_s=1)
    assert (result.passed, result.status, result.returncode) == (False, "timeout", None)
    assert 1 <= result.duration_s < 5


def test_fork_bomb_is_refused_and_leaves_no_process() -> None:
    program = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    os.fork()"
    result = run_code_sandboxed(program, timeout_s=5)
    assert (result.passed, result.status) == (False, "refused")
    assert "refused os.fork" in result.stderr
    directory = result.stdout.strip()
    assert directory and not os.path.exists(directory)  # the temporary directory is gone
    assert _processes_in(directory) == []


def test_a_huge_allocation_hits_the_memory_limit() -> None:
    result = run_code_sandboxed("x = bytearray(4 * 1024**3)", memory_mb=256)
    assert (result.passed, result.status) == (False, "memory")
    assert "MemoryError" in result.stderr


def test_writing_outside_the_temporary_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    result = run_code_sandboxed(f"open({str(target)!r}, 'w').write('written')")
    assert (result.passed, result.status) == (False, "refused")
    assert "PermissionError" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize(
    "attack",
    [
        "os.symlink(VICTIM, 'link')\nopen('link', 'w').write('changed')",
        "os.link(VICTIM, 'hard')\nopen('hard', 'w').write('changed')",
        "os.close(os.open(VICTIM, os.O_WRONLY | os.O_TRUNC))",
        "os.remove(VICTIM)",
        "os.rename(VICTIM, 'stolen')",
        "os.chdir(os.path.dirname(VICTIM))\nopen(os.path.basename(VICTIM), 'a').write('x')",
        "import builtins\nbuiltins.isinstance = lambda *a: False\nopen(VICTIM, 'w')",
    ],
    ids=["symlink", "hardlink", "os-open", "remove", "rename", "chdir", "patched-builtins"],
)
def test_other_ways_to_change_an_outside_file_are_refused(tmp_path: Path, attack: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    result = run_code_sandboxed(f"import os\nVICTIM = {str(victim)!r}\n{attack}")
    assert (result.passed, result.status) == (False, "refused")
    assert victim.read_text() == "original"


def test_writing_inside_the_temporary_directory_is_allowed() -> None:
    program = (
        "import os, shutil, tempfile\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f.txt', 'w').write('x')\n"
        "os.rename('a/b/f.txt', 'a/g.txt')\n"
        "with tempfile.NamedTemporaryFile('w') as handle:\n"
        "    handle.write('y')\n"
        "shutil.rmtree('a')\n"
        "open(os.devnull, 'w').write('z')\n"
    )
    assert run_code_sandboxed(program).status == "passed"


def test_opening_a_socket_is_refused_and_nothing_connects() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            f"s.connect(('127.0.0.1', {port}))\n"
            "s.sendall(b'hello')\n"
        )
        result = run_code_sandboxed(program)
        assert (result.passed, result.status) == (False, "refused")
        assert "refused socket" in result.stderr
        readable, _, _ = select.select([listener], [], [], 0.2)
        assert readable == []  # no pending connection


@pytest.mark.parametrize(
    "spawn",
    [
        "import subprocess\nsubprocess.run(['touch', MARKER])",
        "import os\nos.system('touch ' + MARKER)",
        "import os\nos.posix_spawn('/usr/bin/touch', ['touch', MARKER], {})",
        "import os\nos.execv('/usr/bin/touch', ['touch', MARKER])",
        (
            "import multiprocessing, pathlib\n"
            "if __name__ == '__main__':\n"
            "    context = multiprocessing.get_context('spawn')\n"
            "    process = context.Process(target=pathlib.Path(MARKER).touch)\n"
            "    process.start()\n"
            "    process.join()\n"
        ),
    ],
    ids=["subprocess", "os-system", "posix-spawn", "exec", "multiprocessing-spawn"],
)
def test_spawning_processes_is_refused(tmp_path: Path, spawn: str) -> None:
    marker = tmp_path / "spawned"
    result = run_code_sandboxed(f"MARKER = {str(marker)!r}\n{spawn}")
    assert (result.passed, result.status) == (False, "refused")
    assert not marker.exists()


def test_importing_ctypes_is_refused_but_probing_for_it_is_not() -> None:
    result = run_code_sandboxed("import ctypes\nctypes.CDLL(None)")
    assert (result.passed, result.status) == (False, "refused")
    assert "refused importing 'ctypes'" in result.stderr
    probe = "try:\n    import ctypes\nexcept ImportError:\n    ctypes = None\nprint(ctypes)"
    result = run_code_sandboxed(probe)
    assert (result.status, result.stdout) == ("passed", "None\n")


@pytest.mark.parametrize(
    "program",
    [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        "import os\nos.pidfd_open(os.getppid())",
        "import gc\ngc.get_objects()",
    ],
    ids=["kill-parent", "raise-limits", "pidfd", "gc-walk"],
)
def test_reaching_the_harness_or_the_limits_is_refused(program: str) -> None:
    result = run_code_sandboxed(program)
    assert (result.passed, result.status) == (False, "refused")
    assert os.getpid() == HARNESS_PID


def test_a_caught_refusal_still_counts() -> None:
    result = run_code_sandboxed("import os\ntry:\n    os.fork()\nexcept OSError:\n    pass")
    assert (result.returncode, result.status) == (0, "refused")


def test_the_environment_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZYZOO_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    program = (
        "import os, sys\n"
        "print(os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR'])\n"
        "print(sorted(k for k in os.environ if 'SECRET' in k or 'PROXY' in k.upper()"
        " or k.startswith('PYTHON')))\n"
        "print(sys.flags.isolated)\n"
    )
    result = run_code_sandboxed(program)
    assert result.status == "passed"
    assert result.stdout.splitlines() == ["True", "[]", "1"]


def test_stdout_is_truncated_and_says_so() -> None:
    result = run_code_sandboxed("print('x' * 100_000)", max_output_bytes=1000)
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 1000)
    assert "stdout truncated to its first 1000 of 100001 bytes" in result.stdout
    assert len(result.stdout) < 1200


def test_stdin_is_fed_to_the_program() -> None:
    result = run_code_sandboxed("print(input()[::-1])", stdin="olleh\n")
    assert (result.status, result.stdout) == ("passed", "hello\n")


def test_code_verifier_extracts_fenced_code() -> None:
    verify = CodeVerifier(timeout_s=10)
    completion = "Sure:\n```python\ndef square(x):\n    return x * x\n```\nDone."
    assert verify(completion, "assert square(3) == 9")
    assert not verify(completion, "assert square(3) == 10")
    assert verify.run(completion, "assert square(3) == 10").status == "failed"


def test_invalid_arguments_fail_early() -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        run_code_sandboxed("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb must be at least 32"):
        run_code_sandboxed("pass", memory_mb=8)
    with pytest.raises(TypeError, match="memory_mb must be an int"):
        run_code_sandboxed("pass", memory_mb=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_output_bytes must be >= 0"):
        run_code_sandboxed("pass", max_output_bytes=-1)
    with pytest.raises(ValueError, match="python must name an executable"):
        run_code_sandboxed("pass", python="/no/such/python")
    with pytest.raises(TypeError, match="program must be a str"):
        run_code_sandboxed(b"pass")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status must be one of"):
        ExecutionResult(False, "crashed", 1, "", "", 0.0)


def test_the_harness_survives_and_still_runs_programs() -> None:
    # Runs last in this file: after every hostile program above.
    assert os.getpid() == HARNESS_PID
    result = run_code_sandboxed("print(sum(range(10)))", tests="assert sum(range(4)) == 6")
    assert (result.status, result.stdout) == ("passed", "45\n")
