"""`aiinfra-exporter`: flags in node_exporter's style, then serve until SIGTERM/SIGINT.

Bad flags and bad web-config files exit with code 2 and a message naming the flag or key, so a
typo in a deployment fails at once instead of serving partial metrics.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from typing import Any

import click
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.collector_config import CollectorConfig, CollectorConfigError, load_collector_config
from exporter.durations import parse_duration
from exporter.nvml import NvmlSession
from exporter.registry import (
    DEFAULT_DISK_DEVICE_EXCLUDE,
    DEFAULT_FS_TYPES_EXCLUDE,
    DEFAULT_MOUNT_POINTS_EXCLUDE,
    Collector,
    ExporterOptions,
    ScrapeCollector,
    load_collectors,
)
from exporter.server import DEFAULT_MAX_CONNECTIONS, ExporterHTTPServer, parse_listen_address
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

LOG = logging.getLogger("exporter")
DEFAULT_PORT = 10100


class _Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class _Regex(click.ParamType):
    name = "regex"

    def convert(self, value: Any, param: Any, ctx: Any) -> re.Pattern:
        if isinstance(value, re.Pattern):
            return value
        try:
            return re.compile(value)
        except re.error as error:
            self.fail(f"{value!r} is not a valid regular expression: {error}", param, ctx)


def _collector_switches(command: Any) -> Any:
    """Add --collector.NAME/--no-collector.NAME for every registered collector."""
    for name, cls in sorted(load_collectors().items(), reverse=True):
        default = "on" if cls.default_enabled else "off"
        command = click.option(f"--collector.{name}/--no-collector.{name}", f"collector_{name}",
                               default=cls.default_enabled,
                               help=f"{cls.help_text} (default {default})")(command)
    return command


def check_config_sections(collectors: dict[str, type[Collector]], enabled: set[str],
                          config: CollectorConfig | None) -> None:
    """An enabled collector without its --config.file section is a start-up error; a section
    whose collector is off would silently do nothing, so it is logged."""
    for name, cls in sorted(collectors.items()):
        section = cls.config_section
        if section is None:
            continue
        has_section = config is not None and config.has_section(section)
        if name in enabled and not has_section:
            raise click.BadParameter(f"needs --config.file with a {section!r} section",
                                     param_hint=f"--collector.{name}")
        if name not in enabled and has_section:
            LOG.warning("%s: the %r section is ignored: --collector.%s is off", config.path,
                        section, name)


def build_nvml(simulate: int | None, faults: str, call_latency: float = 0.0) -> NvmlSession:
    """The real pynvml, or with --gpu.simulate the simulated devices (tests and demos only)."""
    if simulate is None:
        if faults or call_latency:
            raise click.BadParameter("needs --gpu.simulate", param_hint="--gpu.simulate-faults "
                                                                        "/ --gpu.simulate-latency")
        return NvmlSession()
    from exporter.nvml_sim import FaultSpecError, SimulatedNVML, parse_fault_spec

    simulated = SimulatedNVML(simulate, call_latency_seconds=call_latency)
    try:
        parse_fault_spec(faults, simulated)
    except FaultSpecError as error:
        raise click.BadParameter(str(error), param_hint="--gpu.simulate-faults") from error
    return NvmlSession(simulated)


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@click.option("--web.listen-address", "listen_address", default=f":{DEFAULT_PORT}",
              show_default=True, help="Address to listen on (HOST:PORT; ':PORT' = all IPv4).")
@click.option("--web.telemetry-path", "telemetry_path", default="/metrics", show_default=True,
              help="Path under which metrics are served.")
@click.option("--web.config.file", "web_config_file", type=click.Path(dir_okay=False),
              default=None, help="exporter-toolkit web config (TLS, basic auth).")
@click.option("--web.max-connections", "max_connections", type=click.IntRange(1, 10000),
              default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              help="Connections served at once (one thread each); more wait briefly, then are "
                   "closed.")
@click.option("--collector.timeout", "collector_timeout", type=_Duration(), default="2s",
              show_default=True, help="Longest a scrape waits for a host collector.")
@click.option("--config.file", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of probe targets and process groups (probe, process collectors).")
@click.option("--collector.gpu.timeout", "gpu_timeout", type=_Duration(), default="2s",
              show_default=True,
              help="Longest NVML may take: past it a GPU is reported down, or NVML unavailable.")
@click.option("--collector.gpu.sample-interval", "gpu_sample_interval", type=_Duration(),
              default="5s", show_default=True,
              help="How often each GPU is read on its own thread; scrapes show the latest "
                   "reading (at most this plus one read old).")
@click.option("--collector.filesystem.fs-types-exclude", "fs_types_exclude", type=_Regex(),
              default=DEFAULT_FS_TYPES_EXCLUDE, help="File system types to leave out (regex).")
@click.option("--collector.filesystem.mount-points-exclude", "mount_points_exclude",
              type=_Regex(), default=DEFAULT_MOUNT_POINTS_EXCLUDE,
              help="Mount points to leave out (regex).")
@click.option("--collector.diskstats.device-exclude", "disk_device_exclude", type=_Regex(),
              default=DEFAULT_DISK_DEVICE_EXCLUDE, help="Block devices to leave out (regex).")
@click.option("--collector.gpu_profiling.nvlink-per-link", "nvlink_per_link", is_flag=True,
              default=False, help="Also report each NVLink link's traffic, errors and state "
                                  "(6 series a link; per-GPU totals are always reported).")
@click.option("--path.sysfs", "sysfs_path", type=click.Path(file_okay=False), default="/sys",
              show_default=True, help="sysfs mount point (the infiniband collector reads it).")
@click.option("--gpu.simulate", "simulate", type=click.IntRange(0, 64), default=None,
              help="FOR TESTS AND DEMOS ONLY: serve N simulated GPUs instead of calling NVML.")
@click.option("--gpu.simulate-faults", "simulate_faults", default="",
              help="FOR TESTS: e.g. '1:lost,2:unknown,3:hang,0:unsupported=nvmlDeviceGetFanSpeed,"
                   "0:unsupported=NVML_FI_DEV_MEMORY_TEMP,0:mig=2,0:processes=2,0:pid=1234,"
                   "0:xid=79,1:model=a100,2:workload=stalled,3:pcie=3x8,"
                   "0:error=nvmlGpmSampleGet' or 'driver:missing'.")
@click.option("--gpu.simulate-latency", "simulate_latency", type=_Duration(), default=None,
              help="FOR TESTS AND BENCHMARKS: each simulated NVML device call takes this long.")
@click.option("--log.level", "log_level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@_collector_switches
@click.version_option(__version__, prog_name="aiinfra-exporter")
def main(listen_address: str, telemetry_path: str, web_config_file: str | None,
         max_connections: int, config_file: str | None, collector_timeout: float,
         gpu_timeout: float, gpu_sample_interval: float, fs_types_exclude: re.Pattern,
         mount_points_exclude: re.Pattern, disk_device_exclude: re.Pattern,
         nvlink_per_link: bool, sysfs_path: str, simulate: int | None, simulate_faults: str,
         simulate_latency: float | None, log_level: str, **switches: bool) -> None:
    """Prometheus exporter for host and NVIDIA GPU metrics, collected at scrape time."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address = parse_listen_address(listen_address)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--web.listen-address") from error
    if not telemetry_path.startswith("/"):
        raise click.BadParameter(f"{telemetry_path!r} must start with '/'",
                                 param_hint="--web.telemetry-path")
    try:
        web_config = load_web_config(web_config_file) if web_config_file else None
    except WebConfigError as error:
        raise click.BadParameter(str(error), param_hint="--web.config.file") from error
    try:
        collector_config = load_collector_config(config_file) if config_file else None
    except CollectorConfigError as error:
        raise click.BadParameter(str(error), param_hint="--config.file") from error
    check_config_sections(load_collectors(), {name for name in load_collectors()
                                              if switches[f"collector_{name}"]}, collector_config)

    options = ExporterOptions(nvml=build_nvml(simulate, simulate_faults, simulate_latency or 0.0),
                              gpu_timeout_seconds=gpu_timeout,
                              gpu_sample_interval_seconds=gpu_sample_interval,
                              collector_timeout_seconds=collector_timeout,
                              fs_types_exclude=fs_types_exclude,
                              mount_points_exclude=mount_points_exclude,
                              disk_device_exclude=disk_device_exclude,
                              sys_path=sysfs_path, nvlink_per_link=nvlink_per_link,
                              collector_config=collector_config)
    collectors = [cls(options) for name, cls in sorted(load_collectors().items())
                  if switches[f"collector_{name}"]]
    scrape = ScrapeCollector(collectors)
    registry = CollectorRegistry()
    registry.register(scrape)
    try:
        server = ExporterHTTPServer(address, registry, telemetry_path, web_config or WebConfig(),
                                    max_connections)
    except OSError as error:
        raise click.BadParameter(f"cannot listen on {listen_address}: {error.strerror}",
                                 param_hint="--web.listen-address") from error
    LOG.info("aiinfra-exporter %s listening on %s:%d%s (%s) with collectors: %s", __version__,
             *address, telemetry_path, "TLS" if server.web_config.ssl_context else "plain HTTP",
             ", ".join(collector.name for collector in collectors))
    scrape.start()
    _serve_until_signalled(server)
    scrape.stop()


def _serve_until_signalled(server: ExporterHTTPServer) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.serve_in_thread()
    stop.wait()
    LOG.info("shutting down")
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
