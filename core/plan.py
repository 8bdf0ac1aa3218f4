"""A command's plan: the events it will write, numbered from the ledger's next sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.ledger import Ledger
from core.model import Event, EventKind


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
