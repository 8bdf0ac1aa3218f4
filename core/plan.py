"""A command's plan: the events it will write, numbered from the ledger's next sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from core.ledger import Ledger
from core.model import Bucket, Event, EventKind

# Enum members read for every order, as module constants: on Python 3.11 reading a member
# from its class costs about four times a global's lookup.
_EXTERNAL: Final = Bucket.EXTERNAL


@dataclass(slots=True)
class Plan:
    ledger: Ledger
    request_id: str
    now_ms: int
    events: list[Event] = field(default_factory=list)
    # floors[i]: units that must stay in event i's source bucket (see Ledger.apply).
    floors: list[int] | None = None

    def add(self, kind: EventKind, floor: int = 0, **fields: Any) -> Event:
        event = Event(seq=self.ledger.last_seq + 1 + len(self.events), kind=kind,
                      request_id=self.request_id, time_ms=self.now_ms, **fields)
        self.events.append(event)
        if floor or self.floors is not None:
            if self.floors is None:
                self.floors = [0] * (len(self.events) - 1)
            self.floors.append(floor)
        return event

    def add_record(self, kind: EventKind, reference: str, payload: Any) -> Event:
        """`add` for an event that carries a record (an order, a decision), built without
        keyword arguments: allocation makes two for every order."""
        events = self.events
        event = Event(self.ledger.last_seq + 1 + len(events), kind, -1, -1, _EXTERNAL,
                      _EXTERNAL, 0, reference, self.request_id, self.now_ms, -1, 0, 0,
                      0, -1, -1, payload)
        events.append(event)
        if self.floors is not None:
            self.floors.append(0)
        return event

    def add_move(self, kind: EventKind, floor: int, sku: int, node: int, from_bucket: Bucket,
                 to_bucket: Bucket, quantity: int, reference: str, channel: int = -1) -> Event:
        """`add` for a bucket move, its fields given in order: the same event, built
        without keyword arguments (allocation makes one for every line it places)."""
        events = self.events
        event = Event(self.ledger.last_seq + 1 + len(events), kind, sku, node, from_bucket,
                      to_bucket, quantity, reference, self.request_id, self.now_ms, channel)
        events.append(event)
        floors = self.floors
        if floor or floors is not None:
            if floors is None:
                floors = self.floors = [0] * (len(events) - 1)
            floors.append(floor)
        return event
