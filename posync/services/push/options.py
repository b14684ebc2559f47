"""What a push worker is configured with: a value, so that the service's constructor takes its
collaborators and one of these."""

from __future__ import annotations

from dataclasses import dataclass, field

from posync.retry import RetryPolicy

__all__ = ["PushOptions"]


@dataclass(frozen=True)
class PushOptions:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # this worker's name on the leases it takes; None: a new random one per PushService
    owner: str | None = None
    lease_seconds: float = 60.0
    batch_size: int = 500

    @property
    def horizon(self) -> float:
        """An item due later than now plus this was scheduled under a clock since set back: no backoff
        and no lease lasts this long (``OutboxRepository.bring_forward``)."""
        return self.retry.max_backoff + self.lease_seconds + 60.0
