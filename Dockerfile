# One image for api, worker and migrate. CPU torch by default; for GPU workers build with
#   docker compose build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY api api
COPY worker worker
COPY migrations migrations
# editable: the console scripts (embedtrain-admin migrate, in the migrate service) then import the code from /app,
# beside migrations/ and alembic.ini; a plain install would import a copy in site-packages, where neither is
RUN pip install --extra-index-url "$TORCH_INDEX" -e . \
    && useradd --create-home --uid 1000 app && mkdir -p /data && chown app /data
USER app
EXPOSE 8000 9108
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000"]
