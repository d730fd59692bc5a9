"""The code sandbox contains what a model may write: file damage, endless loops, fork bombs,
memory hogs, network access. Each hostile program runs for real; most run twice, with and
without the Python guard, so the kernel's layers are proved on their own."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from scheda.evaluation import sandbox
from scheda.evaluation.sandbox import run_python

# One xdist group: run as root, every sandbox's program is `nobody`, and the process cap
# (RLIMIT_NPROC) counts all of nobody's processes, so a fork bomb here on one worker would
# starve a test on the other worker whose program forks once (it saw BlockingIOError).
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux"),
    pytest.mark.xdist_group("sandbox"),
]

SANDBOX_SCRIPT = str(Path(sandbox.__file__).resolve())


def is_sandbox(process: psutil.Process) -> bool:
    try:
        return SANDBOX_SCRIPT in (process.cmdline() or [])
    except psutil.Error:
        return False


def started_elsewhere(process: psutil.Process) -> bool:
    """Whether a sandbox process belongs to another live process (another worker of `pytest
    -n`, running its own sandboxes): its first ancestor that is not a sandbox is neither this
    test process nor init. One that outlived its run_python is an orphan, and counts here."""
    try:
        ancestor = process.parent()
        while ancestor is not None and is_sandbox(ancestor):
            ancestor = ancestor.parent()
    except psutil.Error:
        return False
    return ancestor is not None and ancestor.pid not in (os.getpid(), 1)


def leftovers() -> set[psutil.Process]:
    """Every live process of a sandbox of this test process: they all run (or were forked
    from) sandbox.py."""
    found = set()
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if SANDBOX_SCRIPT not in cmdline or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not started_elsewhere(process):
            found.add(process)
    return found


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    before = leftovers()  # empty, unless an evaluation runs beside the tests
    yield
    assert leftovers() - before == set(), "a sandboxed process outlived run_python"


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip()


# -- ordinary programs ------------------------------------------------------------------------


def test_a_passing_program_passes_and_its_output_is_kept() -> None:
    result = run_python("print('hello from the sandbox')\nassert 1 + 1 == 2\n")
    assert result.status == "passed", result
    assert result.returncode == 0
    assert result.stdout_tail == "hello from the sandbox\n"
    assert result.seconds < 5
    assert "rlimits" in result.containment


def test_a_failing_assert_fails_with_the_programs_own_traceback() -> None:
    result = run_python("def f():\n    return 1\n\nassert f() == 2\n")
    assert result.status == "failed"
    assert result.returncode == 1
    assert "AssertionError" in result.stderr_tail
    assert 'File "main.py", line 4' in result.stderr_tail
    assert "sandbox.py" not in result.stderr_tail


def test_exit_codes_and_syntax_errors() -> None:
    assert run_python("import sys\nsys.exit(0)\n").status == "passed"
    exited = run_python("import sys\nsys.exit(3)\n")
    assert (exited.status, exited.returncode) == ("failed", 3)
    broken = run_python("def f(:\n    pass\n")
    assert broken.status == "failed"
    assert "SyntaxError" in broken.stderr_tail


def test_the_program_can_use_its_own_folder_and_the_standard_library() -> None:
    result = run_python(
        program(
            """
            import hashlib, json, math, re
            from collections import Counter
            from typing import List
            with open("notes.txt", "w") as f:
                f.write("ok")
            print(open("notes.txt").read(), math.isqrt(17), hashlib.md5(b"x").hexdigest()[:4])
            """
        )
    )
    assert result.status == "passed", result
    assert result.stdout_tail == "ok 4 9dd4\n"


def test_the_environment_is_empty_and_the_folder_is_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDA_SECRET", "do-not-leak")
    monkeypatch.setenv("HOME", "/parent/home")
    result = run_python(
        program(
            """
            import os, sys
            print(sorted(os.environ))
            print(os.environ["HOME"] == os.environ["TMPDIR"] == os.getcwd())
            print(os.listdir("."))
            print(sys.flags.isolated, sys.flags.no_site)
            """
        )
    )
    assert result.status == "passed", result
    names, same, listing, flags = result.stdout_tail.splitlines()
    assert "SCHEDA" not in names
    assert "do-not-leak" not in result.stdout_tail
    assert "/parent/home" not in result.stdout_tail
    assert same == "True"
    assert listing == "['main.py']"
    assert flags == "1 1"


def test_the_folder_is_removed_afterwards() -> None:
    result = run_python(
        "import os\nprint(os.getcwd())\nos.makedirs('d/e')\nos.symlink('/etc', 'd/etc')\n"
        "os.chmod('d', 0)\n",
        guard=False,
    )
    assert result.status == "passed", result
    folder = Path(result.stdout_tail.strip())
    assert folder.name.startswith("scheda-sandbox-")
    assert not folder.exists()


def test_output_is_kept_as_a_bounded_tail() -> None:
    result = run_python("print('x' * 1_000_000)\nprint('the end')\n")
    assert result.status == "passed"
    assert len(result.stdout_tail) <= sandbox.TAIL_BYTES
    assert result.stdout_tail.endswith("the end\n")


def test_several_sandboxes_run_at_once_from_threads() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_python(f"print({i} * {i})"), range(4)))
    assert [r.stdout_tail for r in results] == ["0\n", "1\n", "4\n", "9\n"]


# -- hostile programs -----------------------------------------------------------------------


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "kernel-only"])
def test_files_outside_the_folder_cannot_be_deleted_or_overwritten(
    tmp_path: Path, guard: bool
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)  # even a file anyone may write is out of reach
    result = run_python(
        program(
            f"""
            import os, shutil
            path = {str(victim)!r}
            errors = []
            for attempt in (
                lambda: os.remove(path),
                lambda: open(path, "w").write("gone"),
                lambda: os.rename(path, path + ".moved"),
                lambda: shutil.rmtree({str(tmp_path)!r}),
                lambda: open({str(tmp_path / "new.txt")!r}, "w").write("planted"),
            ):
                try:
                    attempt()
                except Exception as exc:
                    errors.append(type(exc).__name__)
            print(errors)
            assert len(errors) == 5, errors
            """
        ),
        guard=guard,
    )
    assert result.status == "passed", result  # every attempt raised inside the program
    assert victim.read_text() == "keep me"
    for attempt in (f"import os\nos.remove({str(victim)!r})", f"open({str(victim)!r}, 'w')"):
        assert run_python(attempt, guard=guard).status == "failed"
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "kernel-only"])
def test_an_endless_loop_times_out_and_nothing_survives(guard: bool) -> None:
    started = time.perf_counter()
    result = run_python("while True:\n    pass\n", timeout_s=2, guard=guard)
    elapsed = time.perf_counter() - started
    assert result.status == "timeout"
    assert 2.0 <= elapsed < 4.0
    assert result.returncode is None


def test_the_cpu_limit_kills_a_busy_program() -> None:
    result = run_python("while True:\n    pass\n", timeout_s=6, cpu_s=1)
    assert result.status == "killed"
    assert result.returncode is not None and result.returncode < 0
    assert result.seconds < 5


def test_a_child_that_leaves_the_process_group_is_still_killed() -> None:
    result = run_python(
        program(
            """
            import os, time
            if os.fork() == 0:
                os.setsid()
                while True:
                    time.sleep(0.1)
            print("parent leaves")
            """
        ),
        timeout_s=3,
        guard=False,
    )
    assert result.status == "passed"
    assert result.stdout_tail == "parent leaves\n"


FORK_BOMBS = {
    "os.fork": """
        import os
        while True:
            try:
                os.fork()
            except BlockingIOError:  # the process cap
                pass
        """,
    "subprocess": """
        import subprocess, sys
        while True:
            try:
                subprocess.Popen([sys.executable, "-c", "import os\\nwhile True: os.fork()"])
            except BlockingIOError:  # the process cap
                pass
        """,
    "multiprocessing": """
        import multiprocessing, time

        def spin():
            while True:
                try:
                    multiprocessing.Process(target=spin).start()
                except BlockingIOError:
                    pass

        spin()
        """,
}


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "kernel-only"])
@pytest.mark.parametrize("bomb", sorted(FORK_BOMBS))
def test_fork_bombs_are_contained(bomb: str, guard: bool) -> None:
    started = time.perf_counter()
    result = run_python(program(FORK_BOMBS[bomb]), timeout_s=2, guard=guard)
    assert time.perf_counter() - started < 8
    if guard:  # refused at the first fork
        assert result.status == "failed", result
        assert "PermissionError" in result.stderr_tail
    else:
        assert result.status in ("timeout", "failed", "killed"), result
    # The machine still works: a fresh process starts, and so does another sandbox.
    assert run_python("print('still here')").stdout_tail == "still here\n"


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "kernel-only"])
def test_allocating_two_gigabytes_fails_inside(guard: bool) -> None:
    result = run_python("block = bytearray(2 * 1024**3)\n", memory_mb=512, guard=guard)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


def test_writing_a_huge_file_is_stopped() -> None:
    result = run_python("open('big', 'wb').write(b'x' * (64 * 1024 * 1024))\n")
    assert result.status in ("killed", "failed")  # SIGXFSZ, or EFBIG where it is ignored


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "kernel-only"])
def test_the_network_is_unreachable(guard: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run_python(
            program(
                f"""
                import socket
                socket.create_connection(("127.0.0.1", {port}), timeout=3)
                print("connected")
                """
            ),
            guard=guard,
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    assert result.status == "failed", result
    assert "connected" not in result.stdout_tail


def test_signals_cannot_reach_the_parent() -> None:
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: received.append(number))
    try:
        result = run_python(
            f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)\n", guard=False
        )
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    assert result.status == "failed"  # not visible from the sandbox, or not permitted


def test_a_program_that_kills_itself_is_reported_as_killed() -> None:
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", guard=False)
    assert (result.status, result.returncode) == ("killed", -9)


def test_guard_refuses_the_dangerous_calls() -> None:
    result = run_python(
        program(
            """
            import os
            refused = []
            for call in (lambda: os.system("true"), lambda: os.fork(), lambda: os.kill(1, 0)):
                try:
                    call()
                except PermissionError:
                    refused.append(True)
            try:
                import ctypes
            except ImportError:
                refused.append(True)
            assert len(refused) == 4, refused
            """
        )
    )
    assert result.status == "passed", result
    assert "python guard" in result.containment
