"""Admission, batching and cancellation in front of one engine. No torch, no HTTP."""

from limner.scheduler.scheduler import Job, PartialImage, Scheduler

__all__ = ["Job", "PartialImage", "Scheduler"]
