"""Vallum as a real process in tests: started, watched through its output, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process whose combined output is collected line by line."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 20.0, *, start: int = 0) -> int:
        """Index of the first line from `start` on that contains `text`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{text!r} did not appear in the output of {self.argv}:\n{self.output}"
                    )
                self._cond.wait(min(left, 0.2))

    def child_line(self, name: str, text: str, timeout: float = 20.0, *, start: int = 0) -> int:
        """Index of the first line from `start` on that the supervisor's child `name`
        wrote (its lines start with the name) and that contains `text`."""
        while True:
            index = self.wait_for(text, timeout, start=start)
            if self.lines[index].startswith(f"{name} "):
                return index
            start = index + 1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(5)
        return code

    def wait(self, timeout: float = 20.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def vallum(*args: str, env: Mapping[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "services", *args], env=env)


def vallum_once(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def children(pid: int) -> dict[int, list[bytes]]:
    """pid -> argv of each direct child of `pid`, found through /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(entry.name)] = argv
    return found


def _option(argv: list[bytes], name: bytes) -> bytes | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def child_pid(proc: Proc, name: str) -> int:
    """The supervisor's child running `name` (with proxy_workers > 1: one of them)."""
    for pid, argv in children(proc.process.pid).items():
        if _option(argv, b"--services") == name.encode():
            return pid
    raise AssertionError(f"no {name} child of {proc.process.pid}")


def worker_pids(proc: Proc) -> dict[int, int]:
    """Worker number -> pid of each proxy worker (`--worker N`) the supervisor runs."""
    return {
        int(worker): pid
        for pid, argv in children(proc.process.pid).items()
        if (worker := _option(argv, b"--worker")) is not None
    }
