"""Node certificate renewal (adapter): renew in a child process when 2/3 of the certificate's life has passed,
then have the MQTT client load the new certificate for its next connection.

The agent runs `renew_once` in a loop and sleeps for what it returns: until the renewal is due (at most an hour
between looks), a few minutes after a failed attempt (sooner as expiry nears), ten minutes once expired (only
re-enrolment with a new token helps then; workloads keep running meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.errors import MqttError
from edge_agent import identity
from edge_agent.identity import NodeIdentity

log = logging.getLogger(__name__)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


async def renew_once(ident: NodeIdentity, now: float,
                     reload_certificate: Callable[[], None]) -> tuple[NodeIdentity, float]:
    """(the identity to use from now on, seconds to wait before looking again)."""
    if ident.expired(now):
        log.error("node certificate expired at %s: the broker will refuse this node. Re-enrol: restart the agent "
                  "with --token NEW_TOKEN (from `cloudless token create`); workloads keep running meanwhile",
                  _utc(ident.not_after))
        return ident, 600.0
    if not ident.renew_due(now):
        due = ident.not_before + identity.RENEW_AT * (ident.not_after - ident.not_before)
        return ident, max(1.0, min(3600.0, due - now))
    try:
        renewed = await asyncio.to_thread(identity.renew_isolated, ident)
    except identity.EnrolmentError as exc:
        log.warning("certificate renewal failed (%s); retrying, %.0f minutes before expiry", exc,
                    (ident.not_after - now) / 60)
        return ident, max(5.0, min(300.0, (ident.not_after - now) / 10))
    try:
        reload_certificate()
    except MqttError as exc:
        log.error("renewed certificate not loaded: %s", exc)
    log.info("node certificate renewed: valid until %s", _utc(renewed.not_after))
    return renewed, 1.0
