"""Admission, batching and cancellation in front of one engine. No torch, no HTTP."""

from limner.scheduler.scheduler import EngineQueue, Job, PartialImage, Scheduler

__all__ = ["EngineQueue", "Job", "PartialImage", "Scheduler"]
