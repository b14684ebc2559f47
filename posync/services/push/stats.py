"""What a push did: counted per batch, added up per drain and per sync cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PushStats"]


@dataclass
class PushStats:
    batches: int = 0
    sent: int = 0
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    coalesced_away: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: PushStats) -> None:
        for name in ("batches", "sent", "applied", "duplicates", "conflicts", "rejected", "coalesced_away"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)
