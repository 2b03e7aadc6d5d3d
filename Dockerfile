# One build, three images: `exporter` installs only the base dependencies (a GPU node never pulls
# TensorFlow), `sidecar` adds the [sidecar] extra, `remediator` the [remediator] extra (the
# webhook receiver and aiinfra-report). Used by docker-compose.yml.
FROM python:3.11-slim AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY anomaly_sidecar ./anomaly_sidecar
COPY remediator ./remediator

FROM source AS exporter
RUN pip install --no-cache-dir . && useradd --system --no-create-home aiinfra
USER aiinfra
EXPOSE 10100
ENTRYPOINT ["aiinfra-exporter"]

FROM source AS sidecar
ENV TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0
RUN pip install --no-cache-dir ".[sidecar]" && useradd --system --no-create-home aiinfra \
    && mkdir -p /var/lib/anomaly-sidecar && chown aiinfra /var/lib/anomaly-sidecar
USER aiinfra
EXPOSE 10101
ENTRYPOINT ["anomaly-sidecar"]
CMD ["run", "--config", "/etc/anomaly-sidecar/stack.yml", "--state-dir", "/var/lib/anomaly-sidecar"]

FROM source AS remediator
RUN pip install --no-cache-dir ".[remediator]" && useradd --system --no-create-home aiinfra \
    && mkdir -p /var/lib/aiinfra-remediator && chown aiinfra /var/lib/aiinfra-remediator
USER aiinfra
EXPOSE 10102
ENTRYPOINT ["aiinfra-remediator"]
CMD ["run", "--config", "/etc/aiinfra-remediator/stack.yml"]
