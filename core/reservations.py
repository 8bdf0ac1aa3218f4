"""Soft holds: reservation records plus a struct-of-arrays index for the expiry sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.kernels._ledger import _expired_slots


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    channel: int
    expires_ms: int
    slots: dict[tuple[int, int], int] = field(default_factory=dict)  # (sku, node) -> slot


class ReservationBook:
    def __init__(self) -> None:
        self.by_id: dict[str, Reservation] = {}
        self._capacity = 0
        self.sku = np.zeros(0, dtype=np.int64)
        self.node = np.zeros(0, dtype=np.int64)
        self.qty = np.zeros(0, dtype=np.int64)
        self.expires_ms = np.zeros(0, dtype=np.int64)
        self.active = np.zeros(0, dtype=np.bool_)
        self.owner: list[str] = []
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.by_id)

    def _new_slot(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self.owner)
        if slot == self._capacity:
            capacity = max(1024, self._capacity * 2)
            for name in ("sku", "node", "qty", "expires_ms", "active"):
                old = getattr(self, name)
                new = np.zeros(capacity, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
            self._capacity = capacity
        self.owner.append("")
        return slot

    def add(self, reservation_id: str, sku: int, node: int, qty: int, channel: int,
            expires_ms: int) -> None:
        record = self.by_id.get(reservation_id)
        if record is None:
            record = Reservation(reservation_id, channel, expires_ms)
            self.by_id[reservation_id] = record
        slot = record.slots.get((sku, node))
        if slot is None:
            slot = self._new_slot()
            record.slots[(sku, node)] = slot
            self.sku[slot] = sku
            self.node[slot] = node
            self.qty[slot] = 0
            self.active[slot] = True
            self.owner[slot] = reservation_id
        self.qty[slot] += qty
        self.expires_ms[slot] = expires_ms

    def remove(self, reservation_id: str, sku: int, node: int, qty: int) -> None:
        record = self.by_id[reservation_id]
        slot = record.slots[(sku, node)]
        self.qty[slot] -= qty
        if self.qty[slot] == 0:
            self.active[slot] = False
            self.owner[slot] = ""
            del record.slots[(sku, node)]
            self._free.append(slot)
        if not record.slots:
            del self.by_id[reservation_id]

    def lines(self, reservation_id: str) -> list[tuple[int, int, int]]:
        """(sku, node, quantity) of a reservation, in (sku, node) order."""
        record = self.by_id[reservation_id]
        return sorted((s, n, int(self.qty[slot])) for (s, n), slot in record.slots.items())

    def expired(self, now_ms: int) -> list[str]:
        """Ids of reservations with a line whose expiry is at or before `now_ms`, sorted."""
        n = len(self.owner)
        out = np.empty(n, dtype=np.int64)
        count = _expired_slots(self.expires_ms[:n], self.active[:n], now_ms, out)
        return sorted({self.owner[int(i)] for i in out[:count]})

    def total_reserved(self) -> int:
        n = len(self.owner)
        return int(self.qty[:n][self.active[:n]].sum())
