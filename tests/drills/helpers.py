"""What the fault drills share: a `chronik serve` process, pg_ctl with a shutdown mode, a
/readyz probe, waiting for projections to settle, and the one-line summary (the shop's clients
and checks are in tests.drills.shop).

Every drill ends with ``report(...)``: one JSON line on stdout (``pytest -s``) and the same line
as the test's ``drill_summary`` property (``--junitxml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import chronik
from chronik.projections import ProjectionAdmin
from chronik.testing.services import PostgresService, free_port

ROOT = Path(__file__).resolve().parents[2]
SHOP_CONFIG = ROOT / "examples" / "shop" / "chronik.yaml"
# A killed server's projections move once its leases expire: 3 s here instead of the default
# 10 s, still six heartbeats, so a drill waits less for the takeover it checks
LEASES = "projection_leases: {lease_ttl: 3, heartbeat: 0.5}\n"


def shop_config(workdir: Path) -> Path:
    """The example shop's config with the drills' short projection leases, in ``workdir``."""
    path = workdir / "shop.yaml"
    path.write_text(SHOP_CONFIG.read_text() + LEASES)
    return path


# --- processes --------------------------------------------------------------------------------


class Serve:
    """A `chronik serve` subprocess on a free HTTP port (gRPC on any port), logging to a file.

    ``start()`` again after ``kill9()`` runs a new process on the same HTTP port and store.
    """

    def __init__(
        self,
        workdir: Path,
        config: Path,
        store: str,
        *,
        grace: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = env or {}
        self.config = config
        self.store = store
        self.grace = grace
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log = workdir / "serve.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Start the server process (it binds within a few seconds; see ``wait_ready``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
            "CHRONIK_STORE": "",
            **self.env,
        }
        with open(self.log, "ab") as log:
            log.write(f"\n--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chronik.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--store",
                    self.store,
                    "--port",
                    "0",
                    "--http-port",
                    str(self.http_port),
                    "--grace",
                    str(self.grace),
                ],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for GET /readyz to answer 200; return when it did (monotonic seconds)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            async with asyncio.timeout(timeout):
                while True:
                    self.check_alive()
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            return time.monotonic()
                    await asyncio.sleep(0.1)

    def check_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"chronik serve exited {None if self.proc is None else self.proc.returncode}:\n"
            + self.log_tail()
        )

    def kill9(self) -> None:
        """SIGKILL the server and reap it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        """Kill the process if it still runs (always called in a finally)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the `chronik` CLI in a subprocess (as an operator would)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "CHRONIK_STORE": ""}
    return subprocess.run(
        [sys.executable, "-m", "chronik.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


WRITER = """
import asyncio, sys, chronik
async def main(url, n, pause):
    done = 0
    async with chronik.open_store(url) as s:
        for i in range(n):
            event = chronik.EventData('added', {'x': i})
            await s.append(chronik.StreamId('acc', f'w{i % 7}'), [event])
            done += 1
            await asyncio.sleep(pause)
    print(done)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def writer(url: str, n: int, pause: float) -> subprocess.Popen[str]:
    """Another process appending ``n`` ``added`` events, ``pause`` s apart; it prints how many
    appends were acknowledged when done."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(n), str(pause)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pg_ctl(service: PostgresService, action: str, mode: str | None = None) -> None:
    """``pg_ctl stop|start|restart`` on the session's cluster, with a shutdown ``mode``
    (smart, fast, immediate), run as the cluster's OS user."""
    assert service.workdir is not None
    args = [service.bin["pg_ctl"], action, "-w", "-t", "60", "-D", str(service.data_dir)]
    if mode is not None:
        args += ["-m", mode]
    if action in ("start", "restart"):
        args += ["-l", str(service.workdir / "server.log")]
    as_other = os.geteuid() == 0 and pwd.getpwuid(os.geteuid()).pw_name != service.user
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=90,
        user=service.user if as_other else None,
        cwd=service.workdir,
    )
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr or done.stdout}"


# --- watching ---------------------------------------------------------------------------------


class Probe:
    """Polls GET /readyz every 0.1 s and keeps (monotonic time, status) pairs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seen: list[tuple[float, int]] = []
        self.problems: dict[str, int] = {}  # why /readyz said no, and how often

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.5) as http:
            while not stop.is_set():
                try:
                    answer = await http.get("/readyz")
                    status = answer.status_code
                    if status != 200:
                        for problem in answer.json().get("problems", [answer.text[:200]]):
                            key = problem[:120]
                            self.problems[key] = self.problems.get(key, 0) + 1
                except httpx.TransportError:
                    status = 0
                self.seen.append((time.monotonic(), status))
                await asyncio.sleep(0.1)

    def first_ready_after(self, t: float) -> float | None:
        """The first 200 at or after ``t``."""
        return next((at for at, s in self.seen if at >= t and s == 200), None)

    def ready_for_good_after(self, t: float, until: float | None = None) -> float | None:
        """The start of the run of 200s (after ``t``, up to ``until``) that lasts to the end:
        readiness that flaps back to 503 does not count."""
        found = None
        for at, status in self.seen:
            if at < t or (until is not None and at >= until):
                continue
            found = (found or at) if status == 200 else None
        return found


def seconds(later: float | None, t: float) -> float | None:
    return None if later is None else round(later - t, 2)


# --- reading the store ------------------------------------------------------------------------


async def read_events(store: chronik.EventStore) -> list[chronik.RecordedEvent]:
    return [e async for e in store.read_all()]


def gaps(events: list[chronik.RecordedEvent]) -> list[str]:
    """Streams whose sequences are not 0..n-1 in order of position."""
    seen: dict[chronik.StreamId, list[int]] = {}
    for e in events:
        seen.setdefault(e.stream, []).append(e.sequence)
    return [str(s) for s, seqs in seen.items() if seqs != list(range(len(seqs)))]


async def wait_quiet(
    store: chronik.EventStore,
    names: list[str],
    timeout: float = 90.0,
) -> list[chronik.RecordedEvent]:
    """Wait until the projections ``names`` are alive with no lag and no rebuild running, the
    head unchanged across two looks; return the events then stored."""
    admin = ProjectionAdmin(store)
    last: chronik.Position | None = None
    deadline = time.monotonic() + timeout
    while True:
        head = await store.head()
        statuses = {s.name: s for s in await admin.statuses()}
        quiet = all(
            n in statuses
            and statuses[n].alive
            and statuses[n].lag_events == 0
            and statuses[n].building is None
            for n in names
        )
        if quiet and head == last:
            return await read_events(store)
        assert time.monotonic() < deadline, (
            f"projections not quiet within {timeout} s: head {head}, "
            + "; ".join(
                f"{s.name} {s.state} alive={s.alive} lag={s.lag_events} at {s.position} "
                f"building={s.building} dead={s.dead_letters} error={s.last_error}"
                for s in statuses.values()
            )
        )
        last = head if quiet else None
        await asyncio.sleep(0.3)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` every 0.05 s until true; return when (monotonic); fail after timeout."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic()


# --- the summary ------------------------------------------------------------------------------


def report(record_property: Callable[[str, object], None], drill: str, **figures: Any) -> None:
    """Print the drill's one summary line and attach it to the test report."""
    line = json.dumps({"drill": drill, **figures}, sort_keys=False)
    print(line)
    record_property("drill_summary", line)
