"""Prometheus metrics of a job service, computed at scrape time from the store and the runner (one registry
per service, so several services can live in one process — as they do in the tests)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from services.jobs.runner import JobRunner
from services.jobs.store import JobStore

__all__ = ["CONTENT_TYPE_LATEST", "JobMetrics"]


class _JobCollector(Collector):
    def __init__(self, kind: str, store: JobStore, runner: JobRunner) -> None:
        self.kind, self.store, self.runner = kind, store, runner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("brl_jobs", "Stored jobs by status", labels=["kind", "status"])
        for status, count in self.store.counts(self.kind).items():
            jobs.add_metric([self.kind, status], count)
        yield jobs
        yield GaugeMetricFamily(
            "brl_job_workers_busy", "Worker processes running a job", value=len(self.runner.running())
        )
        yield GaugeMetricFamily(
            "brl_job_workers", "Worker processes (jobs that can run at once)", value=self.runner.max_workers
        )
        yield GaugeMetricFamily(
            "brl_job_queue_depth", "Jobs waiting for a worker", value=self.runner.queued()
        )


class JobMetrics:
    def __init__(self, kind: str, store: JobStore, runner: JobRunner) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobCollector(kind, store, runner))

    def render(self) -> bytes:
        return generate_latest(self.registry)
