# Landun: one image for ingest, API and simulators (docker-compose.yml).
# The build stage turns the source into a wheel, so the runtime image holds only installed
# packages: no sources, tests or build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . && cp requirements.lock /wheels/

FROM python:3.11-slim
# Optional extras, e.g. `--build-arg LANDUN_EXTRAS=[influx]` for the InfluxDB readings backend.
ARG LANDUN_EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# CJK glyphs, so that a page rendered inside the image (a headless browser printing evidence
# records or taking screenshots) shows Chinese rather than empty boxes. Debian's security
# updates move package versions, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# A fixed numeric uid, so volume ownership is the same on every host; the data directory is
# created here so that a fresh named volume mounted on it inherits that ownership.
# The same pinned versions as the tests ran with (requirements.lock).
RUN pip install --no-cache-dir -c /wheels/requirements.lock "$(ls /wheels/landun-*.whl)${LANDUN_EXTRAS}" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/landun --create-home landun
USER 10001:10001
WORKDIR /var/lib/landun
EXPOSE 8000
# slim has no curl; Python is there anyway.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["landun", "run", "--host=0.0.0.0", "--no-simulators", "--data-dir=/var/lib/landun"]
