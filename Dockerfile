# The diagram's layout engine and the admin's editor, pinned by package-lock.json, for our own static files.
FROM node:20-slim AS front-end-libraries
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HOST=0.0.0.0 PORT=8000
WORKDIR /app
# msgfmt, for compilemessages.
RUN apt-get update && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/*
COPY . .
COPY --from=front-end-libraries /build/node_modules/elkjs/lib/elk.bundled.js /build/node_modules/elkjs/LICENSE.md static/vendor/elkjs/
COPY --from=front-end-libraries /build/node_modules/codemirror/lib/ static/vendor/codemirror/lib/
COPY --from=front-end-libraries /build/node_modules/codemirror/mode/yaml/ static/vendor/codemirror/mode/yaml/
COPY --from=front-end-libraries /build/node_modules/codemirror/addon/fold/ static/vendor/codemirror/addon/fold/
COPY --from=front-end-libraries /build/node_modules/codemirror/addon/edit/ static/vendor/codemirror/addon/edit/
COPY --from=front-end-libraries /build/node_modules/codemirror/LICENSE static/vendor/codemirror/
# The secret key is given when the container runs (docker-compose.yml), never built in:
# these two commands need one only to load the settings.
RUN pip install -e . \
    && SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
    && SECRET_KEY=build-only python manage.py compilemessages -v0
EXPOSE 8000
# The supervisor: daphne web processes on port 8000, Celery workers and the Celery beat
# (docs/operations.md); its flags `--no-web`, `--workers N`, `--no-beat` run a part of them.
CMD ["python", "-m", "labconsole.supervise"]
