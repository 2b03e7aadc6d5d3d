"""The running daemon: /metrics endpoint, the schedulers, and config reload on SIGHUP.

A reload builds the new schedulers from the new file only after it validated; a bad file
leaves the old schedulers running and sets anomaly_sidecar_config_last_reload_successful to 0.
Jobs whose model, query and scheduler sections did not change keep their detector (what the
model learned and every series' state).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from anomaly_sidecar.config import ConfigError, SidecarConfig, load_config
from anomaly_sidecar.reader import PromReader, QueryRejected, ReaderError
from anomaly_sidecar.scheduler import Job, SchedulerRunner
from anomaly_sidecar.writer import OutputCollector, SelfMetrics

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The sidecar cannot run with this configuration (e.g. the backend rejects a query)."""


def check_queries(config: SidecarConfig, reader: PromReader) -> None:
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


class Sidecar:
    """Owns the registry, the HTTP server and the scheduler runners of the live config."""

    def __init__(self, config: SidecarConfig, config_path: Path, state_dir: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.state_dir = state_dir
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.outputs = OutputCollector(config.server.metric_name_template)
        self.registry.register(self.outputs)
        self.runners: list[SchedulerRunner] = []
        self._http = None
        self._lock = threading.Lock()

    def reader(self, config: SidecarConfig) -> PromReader:
        return PromReader(config.reader, on_request=self.metrics.record_request)

    def start(self) -> None:
        check_queries(self.config, self.reader(self.config))
        host, port = self.config.server.host_port
        self._http = start_http_server(port, addr=host, registry=self.registry)
        self._start_runners(self.config, previous_jobs=[])
        log.info("serving on http://%s:%d/metrics", host, port)

    def _start_runners(self, config: SidecarConfig, previous_jobs: list[Job]) -> None:
        reader = self.reader(config)
        kept = {(job.labels, json_key(job)): job for job in previous_jobs}
        for alias, jobs in build_jobs(config, self.state_dir).items():
            for job in jobs:
                previous = kept.get((job.labels, json_key(job)))
                if previous is not None:
                    job.detector, job.fitted_at = previous.detector, previous.fitted_at
                else:
                    job.restore()
            runner = SchedulerRunner(config.schedulers[alias], jobs, reader, self.outputs,
                                     self.metrics)
            runner.start()
            self.runners.append(runner)
        self.outputs.forget_jobs_except({job.labels for runner in self.runners
                                         for job in runner.jobs})

    def reload(self) -> bool:
        """Re-read the config file; on any error keep running the old one."""
        with self._lock:
            try:
                config = load_config(self.config_path)
                check_queries(config, self.reader(config))
            except (ConfigError, StartupError) as error:
                log.error("reload failed, keeping the running configuration: %s", error)
                self.metrics.reload_successful.set(0)
                return False
            if config.server != self.config.server:
                log.warning("server section changed: the listen address and metric names "
                            "take effect at the next restart, not on reload")
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
        self._stop_runners()
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def json_key(job: Job) -> tuple:
    """What must be unchanged for a job to keep its fitted model across a reload."""
    scheduler = job.scheduler
    return (str(job.identity), scheduler.fit_every_seconds, scheduler.fit_window_seconds)
