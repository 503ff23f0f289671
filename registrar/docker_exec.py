"""Exec probes on a Docker engine (``SERVICE_CHECK_EXEC``): run a command in a container through Docker's exec
API and read its exit code and output within a timeout. The only requests registrar makes that write."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import urllib.parse
from typing import Any

import docker
import docker.errors
import requests
import urllib3

from registrar.docker_client import call, cut, end, engine_message, parse_body, reason
from registrar.errors import DockerError
from registrar.model import ExecResult


class DockerExec:
    """Runs exec probes on one engine, over the Docker adapter's docker-py client; ends them all at once when
    registrar stops."""

    def __init__(self, api: Any, api_version: str, where: str) -> None:
        self.api = api
        """docker-py's APIClient on the engine's API version (the Docker adapter's)."""
        self.api_version = api_version
        self.where = where
        self._lock = threading.Lock()
        self._probes: set[Any] = set()
        """The exec streams being read, which ``cancel()`` ends."""
        self._cancelled = False

    def run(self, container_id: str, args: tuple[str, ...], timeout: float, output_max: int) -> ExecResult:
        """Run ``args`` in the container (Docker's exec API: create, start, inspect; no shell, no TTY) and
        read its output for ``timeout`` seconds at most: the exit code (None when cut at the timeout) and up
        to ``output_max`` bytes of stdout and stderr as they came (the rest is read and dropped). Raises
        DockerError when the engine refuses (the container is not running: 409), cannot be reached,
        or ``cancel()`` ended the run.

        Docker has no call to stop an exec: a command cut at its timeout runs on in the container."""
        what = f"running a probe in container {container_id[:12]}"
        deadline = time.monotonic() + timeout
        self._refuse_when_cancelled(what)
        created = call(
            self.where, what, lambda: self.api.exec_create(container_id, list(args), stdout=True, stderr=True)
        )
        exec_id = str(created["Id"])
        stream = call(self.where, what, lambda: self._output(exec_id, max(0.01, deadline - time.monotonic())))
        cut_at_deadline = threading.Event()

        def at_deadline() -> None:
            cut_at_deadline.set()
            cut(stream)

        # The output is read with no timeout: shutting the socket down at the deadline ends the read.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), at_deadline)
        with self._lock:
            self._probes.add(stream)
        kept = bytearray()
        try:
            self._refuse_when_cancelled(what)
            watchdog.start()
            for data in stream:  # each frame's payload, stdout and stderr as they came; ends at EOF or shutdown
                room = output_max - len(kept)
                if room > 0:
                    kept += data[:room]
        except (struct.error, requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as e:
            if not cut_at_deadline.is_set():  # a stream cut in a frame's head at the deadline has ended
                self._refuse_when_cancelled(what)
                raise DockerError(f"{what} at {self.where}: {reason(e)}") from None
        finally:
            watchdog.cancel()
            with self._lock:
                self._probes.discard(stream)
            end(stream)
        output = kept.decode("utf-8", "replace")
        self._refuse_when_cancelled(what)
        if cut_at_deadline.is_set():
            return ExecResult(None, output)
        state = call(self.where, what, lambda: self.api.exec_inspect(exec_id))
        code = state.get("ExitCode")
        if state.get("Running") or not isinstance(code, int):
            return ExecResult(None, output)
        return ExecResult(code, output)

    def _output(self, exec_id: str, timeout: float) -> Any:
        """``POST /exec/<id>/start`` (attached, no TTY) on the session: docker-py's CancellableStream of the
        frames' payloads, read through the response rather than the socket under it (docker-py's exec_start
        reads the socket and loses the output its HTTP reader took with the answer's head: docker/docker-py#3332).
        The engine has ``timeout`` seconds to answer; raises APIError when it refuses."""
        url = f"{self.api.base_url}/v{self.api_version}/exec/{urllib.parse.quote(exec_id, safe='')}/start"
        response = self.api.post(url, json={"Detach": False, "Tty": False}, stream=True, timeout=timeout)
        if response.status_code != 200:
            with contextlib.closing(response):
                raise docker.errors.APIError(
                    f"{response.status_code}", response, engine_message(parse_body(response.content))
                )
        return docker.types.CancellableStream(self.api._multiplexed_response_stream_helper(response), response)

    def _refuse_when_cancelled(self, what: str) -> None:
        with self._lock:
            if self._cancelled:
                raise DockerError(f"{what} at {self.where}: registrar is stopping")

    def cancel(self) -> None:
        """End every probe's output stream in flight at once, and refuse new probes (registrar is stopping)."""
        with self._lock:
            self._cancelled = True
            probes = list(self._probes)
        for stream in probes:
            cut(stream)
