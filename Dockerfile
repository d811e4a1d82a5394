FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY store store
COPY ingest ingest
COPY alerts alerts
COPY api api
COPY simulators simulators
COPY landun landun
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["landun", "run", "--host", "0.0.0.0", "--no-simulators"]
