"""The supervisor's own liveness: ``$KV.corral_fleet.supervisor.<host>``.

One live supervisor per fleet host. The key is claimed by compare-and-set and
refreshed with a per-key TTL, exactly as a bot holds its name
(:class:`corral.bots.liveness.Liveness`), so a second supervisor for the same
host is refused and a dead one's key lapses by itself.
"""

from __future__ import annotations

import nats.js.errors

from corral.core.fleet import FLEET_BUCKET, SupervisorBeat, decode_supervisor, supervisor_key
from corral.core.names import fleet_key_subject
from corral.bots.liveness import Beat, Liveness
from corral.core import leases
from corral.core.connect import TRANSIENT
from corral.core.log import Logger


class SupervisorLiveness(Liveness):
    """:class:`corral.bots.liveness.Liveness` on ``$KV.corral_fleet.supervisor.<host>``.

    The claim, refresh and release logic is the bots'; only the key, the bucket
    and the value type differ. (Liveness could take those three as arguments;
    until then these overrides are the seam.)
    """

    def __init__(self, js, host: str, ttl: float, log: Logger) -> None:
        super().__init__(js, host, ttl, log)
        self.key = supervisor_key(host)
        self.subject = fleet_key_subject(self.key)

    async def _last(self):
        return await leases.read(self.js, FLEET_BUCKET, self.key, leader=True)  # from the leader: see Liveness._last

    @staticmethod
    def _decode(data: bytes | None) -> SupervisorBeat | None:
        return decode_supervisor(data)

    async def release(self) -> None:
        """Delete the key, also when a heartbeat cancelled by the shutdown landed after all."""
        try:
            last = await self._last()
        except (*TRANSIENT, nats.js.errors.APIError):
            last = None  # super().release() reports the failure
        holder = None if last is None else self._decode(last.data)
        if holder is not None and holder.incarnation == self.incarnation:
            self.seq = last.seq
        await super().release()

    def _taken(self, holder: Beat | None) -> str:
        if holder is None:
            return f"fleet host {self.name!r} is held by a live supervisor"
        return (
            f"fleet host {self.name!r} already has a live supervisor (pid {holder.pid} on {holder.host}, "
            f"incarnation {holder.incarnation}); stop it or pick another --host"
        )
