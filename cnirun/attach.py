"""Attaching a namespace to its networks and detaching it again: the ADD loop and the reverse
DEL, shared by the sandbox session (`run`) and `priv-net-run`.

Before a chain with portmap is attached, the host gets its localhost guard
(cnirun.host.localnet). Each attachment is handed to `before_add` (the session records it on
disk) before its ADD starts, so an ADD cut short by a crash or a second signal is still
DELeted later. A first signal during an ADD lets it finish; the loop then stops (see
cnirun.host.signals).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList
from cnirun.cni.types import Result, RuntimeConf
from cnirun.errors import CnirunError
from cnirun.host import localnet
from cnirun.host.signals import Mode, SignalGuard
from cnirun.testhooks import fault_point

log = logging.getLogger(__name__)

# An ADD slower than this gets a one-line note, shown on a terminal only (the CLI drops
# records marked `terminal_only` when stderr is a pipe or a file).
SLOW_ADD_NOTE_AFTER = 2.0


def _slow_note(network: str) -> None:
    log.info(
        "still waiting for the CNI plugins of network %s (ADD)...",
        network,
        extra={"terminal_only": True},
    )


class Attachment(NamedTuple):
    """One network on one interface of a namespace."""

    net: NetworkConfigList
    rt: RuntimeConf


def add_all(
    cni: CNIConfig,
    attachments: Sequence[Attachment],
    guard: SignalGuard,
    before_add: Callable[[Attachment], None] = lambda _: None,
    after_add: Callable[[Attachment, Result], None] = lambda _a, _r: None,
) -> list[Result]:
    """ADD each attachment in order; return their results.

    Raises:
        CnirunError: an ADD failed (the core has already DELeted that network), naming it.
        Interrupted: a signal arrived; the attachments handed to `before_add` need a DEL.
    """
    if localnet.needed(p.type for a in attachments for p in a.net.plugins):
        localnet.ensure()  # before portmap can set route_localnet on a bridge
    results: list[Result] = []
    for attachment in attachments:
        before_add(attachment)
        previous = guard.mode
        guard.enter(Mode.ADDING)
        note = threading.Timer(SLOW_ADD_NOTE_AFTER, _slow_note, (attachment.net.name,))
        note.daemon = True
        note.start()
        # ADDING lets a first signal wait for the ADD; a wait for the network's lock is not
        # part of it: the signal ends that wait (nothing has run yet).
        interrupted, cni.interrupted = cni.interrupted, lambda: len(guard.signals)
        try:
            result = cni.add_network_list(attachment.net, attachment.rt)
        except CnirunError as e:
            guard.checkpoint()  # ended by a signal (a wait for the lock): say so, as Interrupted
            raise CnirunError(f"network {attachment.net.name}: {e}") from None
        finally:
            cni.interrupted = interrupted
            note.cancel()
            guard.enter(previous)
        results.append(result)
        after_add(attachment, result)
        fault_point("add")
        guard.checkpoint()
    return results


def del_all(cni: CNIConfig, attachments: Sequence[Attachment]) -> list[str]:
    """DEL the attachments in reverse order; return what failed (every DEL is tried)."""
    failures: list[str] = []
    for attachment in reversed(attachments):
        try:
            cni.del_network_list(attachment.net, attachment.rt)
            fault_point("teardown")
        except CnirunError as e:
            failures.append(f"network {attachment.net.name} ({attachment.rt.ifname}): {e}")
    return failures
