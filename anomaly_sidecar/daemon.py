"""The running daemon: the schedulers, the writers, the /metrics endpoint, and config reload on
SIGHUP.

A reload builds the new schedulers from the new file only after it validated; a bad file
leaves the old schedulers running and sets anomaly_sidecar_config_last_reload_successful to 0.
Jobs whose model, query and scheduler sections did not change keep their detector (what the
model learned and every series' state). The server, writer and shard sections are read at
start only: a listening socket, a remote write queue and the share of series a replica owns
do not change under a running process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from anomaly_sidecar.config import ConfigError, ShardConfig, SidecarConfig, load_config
from anomaly_sidecar.endpoint import SidecarHTTPServer
from anomaly_sidecar.reader import PromReader, QueryRejected, ReaderError
from anomaly_sidecar.scheduler import Job, SchedulerRunner
from anomaly_sidecar.self_metrics import SelfMetrics
from anomaly_sidecar.shard import Shard, ShardedReader
from anomaly_sidecar.writers.base import Writer
from anomaly_sidecar.writers.pull import OutputCollector
from anomaly_sidecar.writers.remote_write import RemoteWriter
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)
STARTUP_ONLY_SECTIONS = ("server", "writer", "shard")


class StartupError(RuntimeError):
    """The sidecar cannot run with this configuration (e.g. the backend rejects a query)."""


def check_queries(config: SidecarConfig, reader: PromReader | ShardedReader) -> None:
    """Ask the backend to parse every query, so a bad PromQL expression stops start-up with the
    backend's own message. An unreachable backend is only logged: the sidecar starts anyway and
    its schedulers retry (and count the errors) until the backend is back."""
    for alias, query in config.queries.items():
        try:
            reader.check_query(query.expr)
        except QueryRejected as error:
            raise StartupError(f"{config.source}: queries.{alias}.expr: rejected by the "
                               f"backend: {error}") from None
        except ReaderError as error:
            log.warning("cannot check queries.%s now (backend unreachable?): %s", alias, error)
            return


def build_jobs(config: SidecarConfig, state_dir: Path | None) -> dict[str, list[Job]]:
    """Scheduler alias -> its (model, query) jobs."""
    jobs: dict[str, list[Job]] = {}
    for scheduler in config.schedulers.values():
        jobs[scheduler.alias] = [
            Job(scheduler, config.models[model_alias], query_alias, config.queries[query_alias],
                state_dir)
            for model_alias in scheduler.models
            for query_alias in config.models[model_alias].queries]
    return jobs


def build_writers(config: SidecarConfig, registry: CollectorRegistry) -> list[Writer]:
    """The writers of the `writer:` section; the pull collector is registered to be scraped."""
    writers: list[Writer] = []
    template = config.server.metric_name_template
    if config.writer.pull:
        collector = OutputCollector(template)
        registry.register(collector)
        writers.append(collector)
    if config.writer.remote_write is not None:
        writers.append(RemoteWriter(config.writer.remote_write, template, registry))
    return writers


class Sidecar:
    """Owns the registry, the HTTP server, the writers and the scheduler runners of the live
    config; scores only the series of its shard."""

    def __init__(self, config: SidecarConfig, config_path: Path, state_dir: Path | None,
                 web_config: WebConfig | None = None,
                 shard_override: ShardConfig | None = None) -> None:
        self.shard_override = shard_override
        """--shard-index/--shard-count (or their environment variables): over the file's."""
        config = self._with_shard(config)
        self.config = config
        self.config_path = config_path
        self.state_dir = state_dir
        self.web_config = web_config or WebConfig()
        self.shard = Shard(config.shard.index, config.shard.count)
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.metrics.shard.labels(str(self.shard.index), str(self.shard.count)).set(1)
        self.writers = build_writers(config, self.registry)
        self.runners: list[SchedulerRunner] = []
        self._http: SidecarHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _with_shard(self, config: SidecarConfig) -> SidecarConfig:
        if self.shard_override is None:
            return config
        return dataclasses.replace(config, shard=self.shard_override)

    def reader(self, config: SidecarConfig) -> ShardedReader:
        return ShardedReader(PromReader(config.reader, on_request=self.metrics.record_request),
                             self.shard)

    def start(self) -> None:
        check_queries(self.config, self.reader(self.config))
        self._http = SidecarHTTPServer(self.config.server.host_port, self.registry,
                                       self.web_config)
        self._http_thread = self._http.serve_in_thread()
        self._start_runners(self.config, previous_jobs=[])
        scheme = "https" if self.web_config.ssl_context else "http"
        log.info("serving on %s://%s/metrics; shard %d of %d; writers: %s", scheme,
                 self.config.server.listen_address, self.shard.index, self.shard.count,
                 ", ".join(type(writer).__name__ for writer in self.writers))

    def _start_runners(self, config: SidecarConfig, previous_jobs: list[Job]) -> None:
        reader = self.reader(config)
        kept = {(job.labels, json_key(job)): job for job in previous_jobs}
        for alias, jobs in build_jobs(config, self.state_dir).items():
            for job in jobs:
                previous = kept.get((job.labels, json_key(job)))
                if previous is not None:
                    job.detector, job.fitted_at = previous.detector, previous.fitted_at
                elif job.restore():
                    self._forget_other_shards(job)
            runner = SchedulerRunner(config.schedulers[alias], jobs, reader, self.writers,
                                     self.metrics)
            runner.start()
            self.runners.append(runner)
        running = {job.labels for runner in self.runners for job in runner.jobs}
        self.metrics.model_info.set_jobs(running)
        for writer in self.writers:
            writer.forget_jobs_except(running)

    def _forget_other_shards(self, job: Job) -> None:
        """State saved under another shard count holds series this replica no longer owns:
        drop it at once rather than after a fit_window of not seeing them."""
        foreign = [key for key in job.detector.keys if not self.shard.owns(key)]
        if foreign:
            job.detector.forget(foreign)
            log.info("%s: dropped the restored state of %d series of other shards", job.labels,
                     len(foreign))

    def reload(self) -> bool:
        """Re-read the config file; on any error keep running the old one."""
        with self._lock:
            try:
                config = self._with_shard(load_config(self.config_path))
                check_queries(config, self.reader(config))
            except (ConfigError, StartupError) as error:
                log.error("reload failed, keeping the running configuration: %s", error)
                self.metrics.reload_successful.set(0)
                return False
            for section in STARTUP_ONLY_SECTIONS:
                if getattr(config, section) != getattr(self.config, section):
                    log.warning("the %s section changed: it takes effect at the next restart, "
                                "not on reload", section)
            previous_jobs = [job for runner in self.runners for job in runner.jobs]
            self._stop_runners()
            self.config = config
            self._start_runners(config, previous_jobs)
            self.metrics.reload_successful.set(1)
            log.info("configuration reloaded from %s", self.config_path)
            return True

    def _stop_runners(self) -> None:
        for runner in self.runners:
            runner.stop()
        self.runners = []

    def stop(self) -> None:
        """Stop the schedulers (their state is saved), then the writers (the remote write
        queue gets its timeout to drain), then the endpoint."""
        self._stop_runners()
        for writer in self.writers:
            writer.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http_thread.join(timeout=5)


def json_key(job: Job) -> tuple:
    """What must be unchanged for a job to keep its fitted model across a reload."""
    scheduler = job.scheduler
    return (str(job.identity), scheduler.fit_every_seconds, scheduler.fit_window_seconds)
