"""Fixtures for end-to-end tests: the service's own commands as real subprocesses.

``processes`` starts long-running commands (``unlearnd run``, ``serve``, ``worker``,
``beat``) in process groups of their own, each logging to a file, and kills every group
at the end of the test whatever happened. ``unlearnd`` runs one-shot CLI commands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

UNLEARND = str(Path(sys.executable).with_name("unlearnd"))
REPO = Path(__file__).resolve().parents[2]


def clean_environment(**settings: str) -> dict[str, str]:
    """The caller's environment without any UNLEARND_* variable, plus ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARND_")}
    return {**base, **settings}


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stdout_path: Path | None = None

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        if self.stdout_path is not None:
            text = self.stdout_path.read_text(errors="replace") + text
        return text

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM the group, SIGKILL it if it does not exit in time. Generous: a worker's warm
        shutdown waits for the task in hand (``unlearnd run`` allows its worker 20 s), and under
        a loaded CI machine 30 s was seen to be too short for a clean exit."""
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class Processes:
    tmp_path: Path
    started: list[Service] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str], *, cwd: Path | None = None,
              separate_stdout: bool = False) -> Service:
        log_path = self.tmp_path / f"{name}-{len(self.started)}.log"
        stdout_path = self.tmp_path / f"{name}-{len(self.started)}.out" if separate_stdout else None
        with log_path.open("ab") as log, (stdout_path.open("ab") if stdout_path else log) as out:
            process = subprocess.Popen([UNLEARND, *args], cwd=cwd or self.tmp_path, env=env, stdout=out,
                                       stderr=log, start_new_session=True)
        service = Service(name, process, log_path, stdout_path)
        self.started.append(service)
        return service

    def logs(self) -> str:
        return "\n".join(service.log() for service in self.started)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    for service in reversed(running.started):
        service.stop()


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def unlearnd(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120.0) -> CliResult:
    """One CLI command as a user types it; the caller asserts the exit code."""
    done = subprocess.run([UNLEARND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str,
               watch: tuple[Service, ...] = (), interval: float = 0.5) -> object:
    """Poll until ``predicate`` is truthy; fail early (with its log) if a watched process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in watch:
            if not service.alive():
                raise AssertionError(f"{service.name} exited ({service.process.returncode}) while waiting for "
                                     f"{what}:\n{service.log()[-4000:]}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in watch)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def http_ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
