"""Teardown at the workload's `die` event, while its docker CLI still finishes `--rm`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cnirun.docker.engine import EventStream
from cnirun.docker.runtime import ROLE_WORKLOAD, Docker
from cnirun.errors import CnirunError
from cnirun.sandbox.records import RecordStore, SandboxRecord
from cnirun.sandbox.teardown import teardown

log = logging.getLogger(__name__)


class EarlyTeardown(threading.Thread):
    """Tears the sandbox down as soon as its workload container dies.

    The docker CLI exits only after `--rm` has removed the container, 10-20 ms later: starting
    DEL at the `die` event takes that off every run. If the event never comes (the CLI failed,
    or Docker's events cannot be read), the teardown after the CLI exits does it all.
    """

    def __init__(
        self,
        record: SandboxRecord,
        store: RecordStore,
        docker: Docker,
        interrupted: Callable[[], int] | None = None,
        on_died: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="early-teardown", daemon=True)
        self.record, self.store, self.docker = record, store, docker
        self.interrupted = interrupted
        self.on_died = on_died
        self.failures: list[str] = []
        self.done = False
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._stopped = False

    def run(self) -> None:
        try:
            stream = self.docker.watch_for_exit(self.record.id, ROLE_WORKLOAD)
        except CnirunError as e:
            log.debug("no early teardown: %s", e)
            return
        with self._lock:
            if self._stopped:
                stream.close()
                return
            self._stream = stream
        died = b'"die"' in stream.wait()  # the only events asked for; any other is no cue
        with self._lock:
            stream.close()
            self._stream = None
            if not died or self._stopped:
                return
        log.debug("the workload died: tearing down while its docker CLI finishes")
        # The pool's next infra is made now, beside the DELs: made while the workload starts,
        # it would slow that start down (the engine's work for both on the same cores).
        self.on_died()
        try:
            self.failures = teardown(
                self.record, self.store, self.docker, True, self.interrupted
            )
        except CnirunError as e:  # the teardown after the CLI exits tries again
            log.debug("early teardown: %s", e)
            return
        self.done = True

    def stop(self) -> None:
        """Stop watching (a teardown under way is waited for)."""
        with self._lock:
            self._stopped = True
            if self._stream is not None:
                self._stream.close()
        self.join()
