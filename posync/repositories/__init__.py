"""Repositories: small, named by intent, each taking the caller's connection."""

from posync.repositories.checkpoints import CheckpointRepository
from posync.repositories.conflicts import ConflictRepository
from posync.repositories.entities import EntityRepository
from posync.repositories.logs import LogRepository
from posync.repositories.outbox import OutboxRepository

__all__ = ["CheckpointRepository", "ConflictRepository", "EntityRepository", "LogRepository", "OutboxRepository"]
