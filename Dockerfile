# The birlik platform image: every service is a `birlik` subcommand
# (docker-compose.yml runs ingest, analytics and the simulated plant from it).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app birlik \
    && mkdir -p /data \
    && chown birlik /data

# The source stays in /app (the working directory), so relative paths such as the default
# plant file simulators/plants/central-asia.yaml resolve. Files the services write (dead
# letters, stats) go under /data, a volume in docker-compose.yml.
USER birlik
ENTRYPOINT ["birlik"]
CMD ["--help"]
