"""InfiniBand collector: traffic, errors, state and rate of every InfiniBand and RoCE port.

Multi-node training lives on this fabric: a port that drops to a lower rate, flaps or collects
symbol errors slows every rank of a job. Read from sysfs at scrape time (a few dozen small
files per port, as node_exporter's infiniband collector does); a host without adapters serves
the families empty. --path.sysfs points it at another tree (a container's host mount, a test
fixture).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.registry import Collector, register
from exporter.sysfs_infiniband import TRAFFIC_COUNTERS, read_infiniband

PORT_LABELS = ["device", "port"]
_TRAFFIC_HELP = {
    "data_received_bytes": "Data received on the port.",
    "data_transmitted_bytes": "Data sent on the port.",
    "packets_received": "Packets received on the port.",
    "packets_transmitted": "Packets sent on the port.",
    "transmit_wait": "Ticks the port had data to send but no flow-control credit (congestion).",
}


@register
class InfinibandCollector(Collector):
    name = "infiniband"
    help_text = "InfiniBand and RoCE ports from /sys/class/infiniband"

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("aiinfra_infiniband_info", "An adapter; always 1.",
                                 labels=["device", "board_id", "firmware_version", "hca_type"])
        port_info = GaugeMetricFamily(
            "aiinfra_infiniband_port_info", "A port, its link layer (InfiniBand, or Ethernet for "
            "RoCE) and state names; always 1.",
            labels=[*PORT_LABELS, "link_layer", "state", "physical_state"])
        state = GaugeMetricFamily("aiinfra_infiniband_port_state_id",
                                  "Logical port state (4 = ACTIVE, 1 = DOWN).", labels=PORT_LABELS)
        physical = GaugeMetricFamily("aiinfra_infiniband_port_physical_state_id",
                                     "Physical port state (5 = LinkUp, 3 = Disabled, 2 = "
                                     "Polling).", labels=PORT_LABELS)
        rate = GaugeMetricFamily("aiinfra_infiniband_port_rate_bytes_per_second",
                                 "Rate the link trained at.", labels=PORT_LABELS)
        traffic = {key: CounterMetricFamily(f"aiinfra_infiniband_port_{key}",
                                            _TRAFFIC_HELP[key], labels=PORT_LABELS)
                   for key, _ in TRAFFIC_COUNTERS.values()}
        errors = CounterMetricFamily("aiinfra_infiniband_port_errors",
                                     "Port error counters by type (the IB PortCounters).",
                                     labels=[*PORT_LABELS, "type"])
        for device in read_infiniband(self.options.sys_path):
            info.add_metric([device.name, device.board_id, device.firmware_version,
                             device.hca_type], 1.0)
            for port in device.ports:
                labels = [device.name, port.number]
                port_info.add_metric([*labels, port.link_layer, port.state,
                                      port.physical_state], 1.0)
                for family, value in ((state, port.state_id),
                                      (physical, port.physical_state_id),
                                      (rate, port.rate_bytes_per_second)):
                    if value is not None:
                        family.add_metric(labels, float(value))
                for key, value in port.traffic.items():
                    traffic[key].add_metric(labels, float(value))
                for error_type, value in port.errors.items():
                    errors.add_metric([*labels, error_type], float(value))
        return [info, port_info, state, physical, rate, *traffic.values(), errors]
