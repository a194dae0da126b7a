"""Settings for the RabbitMQ Lab Console.

Everything comes from environment variables (see `.env.example`) with defaults that need
no configuration and are safe to run: SQLite, the local RabbitMQ on 5672 with its
management API on 15672, DEBUG off. The one thing that must be given is SECRET_KEY;
`scripts/setup` writes a new one to `.env` the first time it runs.
"""

from pathlib import Path
from urllib.parse import unquote, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The process environment wins over the file.
environ.Env.read_env(env("ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

# --- Security (docs/operations.md, "Production") ---------------------------------------
# DEBUG's error pages show code, settings and variables: on only when asked for, and even
# then they hide every credential (labconsole/exception_reports.py).
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. scripts/ensure-secret-key (which scripts/setup runs) writes "
        "a new one to .env; or set it in the environment, for example to the output of "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS=true: the console is served over HTTPS by a proxy in front of it that ends TLS and
# says so in a header. It turns on everything `manage.py check --deploy` asks for; each
# setting below can still be set on its own.
HTTPS = env.bool("HTTPS", default=False)


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto: https` -> ("HTTP_X_FORWARDED_PROTO", "https"); empty -> None."""
    if not value.strip():
        return None
    name, sep, expected = value.partition(":")
    if not sep or not name.strip() or not expected.strip():
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https' (the header "
            f"the proxy sets and its value on HTTPS requests), not {value!r}"
        )
    return "HTTP_" + name.strip().upper().replace("-", "_"), expected.strip()


# Trust this header only behind a proxy that sets it on every request (and drops a
# client's own): https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(
    env("SECURE_PROXY_SSL_HEADER", default="X-Forwarded-Proto: https" if HTTPS else "")
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
LANGUAGE_COOKIE_SECURE = SESSION_COOKIE_SECURE
# HSTS for a year, for the host and its subdomains (HSTS: browsers then refuse plain HTTP
# to it): https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)

DEFAULT_EXCEPTION_REPORTER = "labconsole.exception_reports.CredentialHidingReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "labconsole.exception_reports.CredentialHidingFilter"
CSRF_FAILURE_VIEW = "labconsole.errors.csrf_failure"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "exercises",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "labconsole.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "labconsole.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "exercises.context_processors.navigation",
            ],
        },
    }
]

DATABASES = {
    "default": environ.Env.db_url_config(
        env("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workloads, the flow monitor and the web process write from several threads and
    # processes: WAL and IMMEDIATE transactions avoid "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}
    )
    if test_name := env("TEST_DATABASE_NAME", default=""):
        DATABASES["default"]["TEST"] = {"NAME": test_name}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalogue"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
USE_I18N = True
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- RabbitMQ --------------------------------------------------------------------------
# The console's own vhost is the one in RABBITMQ_URL: Celery, flow events and workload
# control live there. Every lab gets a vhost of its own (`lab-<id>`).
RABBITMQ_URL = env("RABBITMQ_URL", default="amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_API_URL = env("RABBITMQ_API_URL", default="http://127.0.0.1:15672/")
_amqp = urlsplit(RABBITMQ_URL)
# The management API's user: by default the user of RABBITMQ_URL.
RABBITMQ_API_USER = env("RABBITMQ_API_USER", default="") or unquote(_amqp.username or "guest")
RABBITMQ_API_PASSWORD = env("RABBITMQ_API_PASSWORD", default="") or unquote(
    _amqp.password or "guest"
)

# Names of the console's own exchanges and Celery queues start with this prefix, so that
# two consoles (say, the test suite and a developer's `make run`) can share one broker.
LABCONSOLE_PREFIX = env("LABCONSOLE_PREFIX", default="labconsole")

# What one user may use (exercises/quotas.py, docs/operations.md): labs not ended at once,
# and lab starts and publishes from the lab page in any minute.
LAB_MAX_PER_USER = env.int("LAB_MAX_PER_USER", default=3)
LAB_STARTS_PER_MINUTE = env.int("LAB_STARTS_PER_MINUTE", default=6)
LAB_PUBLISHES_PER_MINUTE = env.int("LAB_PUBLISHES_PER_MINUTE", default=120)
# Limits every lab vhost gets (https://www.rabbitmq.com/docs/vhosts#limits) and its user
# (https://www.rabbitmq.com/docs/user-limits). Everything of a lab connects as its user:
# one connection per workload, the monitor's, one per publish from the page; a consumer
# uses up to two channels, the monitor two. A lab whose exercise needs more is refused.
LAB_MAX_QUEUES = env.int("LAB_MAX_QUEUES", default=32)
LAB_MAX_CONNECTIONS = env.int("LAB_MAX_CONNECTIONS", default=32)
LAB_MAX_CHANNELS = env.int("LAB_MAX_CHANNELS", default=64)
# An operator policy on every queue of a lab vhost (https://www.rabbitmq.com/docs/policies
# #operator-policies): the broker applies the lower of it and the exercise's own limits,
# with the queue's own overflow behaviour (drop-head unless the exercise says otherwise).
LAB_QUEUE_MAX_LENGTH = env.int("LAB_QUEUE_MAX_LENGTH", default=10_000)
LAB_QUEUE_MAX_BYTES = env.int("LAB_QUEUE_MAX_BYTES", default=8 * 1024 * 1024)
# A lab nobody has looked at for this long is ended by the sweeper.
LAB_IDLE_MINUTES = env.int("LAB_IDLE_MINUTES", default=30)
# A team's sandbox (exercises/sandboxes.py, docs/sandboxes.md): its vhost's queues and
# connections and its user's channels, the operator policy on its queues, the messages a
# second its producers and its page publish in all, and the minutes it may stay unseen.
SANDBOX_MAX_QUEUES = env.int("SANDBOX_MAX_QUEUES", default=20)
SANDBOX_MAX_CONNECTIONS = env.int("SANDBOX_MAX_CONNECTIONS", default=16)
SANDBOX_MAX_CHANNELS = env.int("SANDBOX_MAX_CHANNELS", default=32)
SANDBOX_QUEUE_MAX_LENGTH = env.int("SANDBOX_QUEUE_MAX_LENGTH", default=10_000)
SANDBOX_QUEUE_MAX_BYTES = env.int("SANDBOX_QUEUE_MAX_BYTES", default=8 * 1024 * 1024)
SANDBOX_MAX_RATE = env.float("SANDBOX_MAX_RATE", default=500.0)
SANDBOX_IDLE_MINUTES = env.int("SANDBOX_IDLE_MINUTES", default=240)
# Seconds of a sandbox's history its page can scrub back through (0: none kept).
SANDBOX_REPLAY_SECONDS = env.int("SANDBOX_REPLAY_SECONDS", default=600)
# A trial lab (the admin's "Try it") ends this long after its last page closed, and when
# nobody has looked at it for LAB_TRIAL_IDLE_MINUTES (exercises/sweep.py, every
# LAB_TRIAL_SWEEP_SECONDS).
LAB_TRIAL_GRACE_SECONDS = env.float("LAB_TRIAL_GRACE_SECONDS", default=60.0)
LAB_TRIAL_IDLE_MINUTES = env.float("LAB_TRIAL_IDLE_MINUTES", default=10.0)
LAB_TRIAL_SWEEP_SECONDS = env.float("LAB_TRIAL_SWEEP_SECONDS", default=15.0)
# A learner of a class with no checkpoint passed and no step opened for this long is shown
# as not moving on the class's dashboard (exercises/classes.py).
CLASS_IDLE_MINUTES = env.int("CLASS_IDLE_MINUTES", default=5)
# How often the sweeper reconciles the broker's lab vhosts and users with the database
# (exercises/sweep.py), and how old a vhost or user with this console's mark and no lab
# starting or running must be before it deletes it.
LAB_SWEEP_SECONDS = env.float("LAB_SWEEP_SECONDS", default=60.0)
LAB_SWEEP_GRACE_SECONDS = env.float("LAB_SWEEP_GRACE_SECONDS", default=300.0)
# How often workloads flush their reports, and how many updates a second a browser gets.
FLOW_BATCH_MS = env.int("FLOW_BATCH_MS", default=100)
FLOW_FRAMES_PER_SECOND = env.int("FLOW_FRAMES_PER_SECOND", default=20)
# Each web process holds one subscription per lab with viewers there (labconsole/flow/
# stream.py): its queue holds this many messages while the process is slow, the oldest
# dropped (x-max-length, drop-head), and the process takes this many unacknowledged.
FLOW_HUB_QUEUE_LENGTH = env.int("FLOW_HUB_QUEUE_LENGTH", default=50)
FLOW_HUB_PREFETCH = env.int("FLOW_HUB_PREFETCH", default=10)
# Seconds a subscription with no viewers left is kept (a page reload comes back to it).
FLOW_HUB_GRACE_SECONDS = env.float("FLOW_HUB_GRACE_SECONDS", default=3.0)
# Messages sent to a browser and not yet acknowledged by it; past that, frames wait in the
# socket's own small buffer (the oldest dropped), and status or workload messages in a
# second one (dropped only past its size): a slow browser never slows the others.
FLOW_VIEWER_IN_FLIGHT = env.int("FLOW_VIEWER_IN_FLIGHT", default=40)
FLOW_VIEWER_BUFFER = env.int("FLOW_VIEWER_BUFFER", default=8)
FLOW_VIEWER_BUFFER_OTHERS = env.int("FLOW_VIEWER_BUFFER_OTHERS", default=64)
# What one lab socket may send (docs/live-protocol.md): the page sends only small ack, ping
# and snapshot frames. A larger frame is answered with an error and the socket closed (1009);
# more frames than the rate, past a short burst, likewise (4429).
LAB_SOCKET_MAX_FRAME_BYTES = env.int("LAB_SOCKET_MAX_FRAME_BYTES", default=4096)
LAB_SOCKET_FRAMES_PER_SECOND = env.float("LAB_SOCKET_FRAMES_PER_SECOND", default=30.0)
LAB_SOCKET_FRAME_BURST = env.int("LAB_SOCKET_FRAME_BURST", default=60)

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_URL = RABBITMQ_URL
CELERY_TASK_DEFAULT_QUEUE = f"{LABCONSOLE_PREFIX}.tasks"
LABCONSOLE_WORKLOAD_QUEUE = f"{LABCONSOLE_PREFIX}.workloads"
# A worker started without -Q consumes both: short tasks, and the long-running workloads.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in (CELERY_TASK_DEFAULT_QUEUE, LABCONSOLE_WORKLOAD_QUEUE)
]
CELERY_TASK_ROUTES = {"labconsole.workloads.*": {"queue": LABCONSOLE_WORKLOAD_QUEUE}}
# Tasks are short: a workload or monitor task only asks the worker's runtime to run it on
# a thread of its own (exercises/runtime.py). Acknowledged late, so a worker that dies
# before starting it hands the task to another.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A solo worker holds up to four tasks. They are short, so holding a few costs nothing;
# with one at a time and publisher confirms on, Celery's event loop took the next task
# only every two seconds or so, and a worker restarted with tasks queued (a killed
# worker's labs) took 17-37 s for 60 queued tasks instead of 1.
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker restart must never end a worker: it reconnects for as long as it takes.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A task is sent only when the broker has confirmed it: a publish into a connection the
# broker has just dropped fails (and is sent again) instead of vanishing.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# One process per core, each with the solo pool: no pool thread shares Celery's broker
# connection (a threads pool deadlocks in basic.qos when the broker comes back).
CELERY_WORKER_POOL = "solo"
CELERY_WORKER_CONCURRENCY = 1
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / ".celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "sweep-idle-labs": {"task": "exercises.sweep_idle_labs", "schedule": 60.0},
    "sweep-labs": {"task": "exercises.sweep_labs", "schedule": LAB_SWEEP_SECONDS},
    "sweep-trial-labs": {"task": "exercises.sweep_trial_labs", "schedule": LAB_TRIAL_SWEEP_SECONDS},
    "sweep-clusters": {"task": "exercises.sweep_clusters", "schedule": 60.0},
    "end-due-classes": {"task": "exercises.end_due_classes", "schedule": 30.0},
}

# A worker process renews the leases of the workloads and monitors it runs this often, and
# a lease that has not been renewed for RUNTIME_LEASE_SECONDS is taken over by another
# worker (its holder died).
RUNTIME_RENEW_SECONDS = env.float("RUNTIME_RENEW_SECONDS", default=1.5)
RUNTIME_LEASE_SECONDS = env.float("RUNTIME_LEASE_SECONDS", default=6.0)
# A workload's reports go straight to its lab's monitor when both run in one worker process,
# and through the broker otherwise; off, every report crosses the broker.
RUNTIME_LOCAL_REPORTS = env.bool("RUNTIME_LOCAL_REPORTS", default=True)

# --- Brokers of a lab's own (labconsole/cluster, docs/cluster.md) -----------------------
# Where the clusters come from (labconsole/cluster/provider.py): "local", nodes the console
# runs itself (the settings below), or "compose", the three RabbitMQ containers of
# docker-compose.yml's `cluster` profile, one cluster, which the console controls through
# the Docker Engine API at LAB_DOCKER_SOCKET, finding them by the labels of compose project
# LAB_COMPOSE_PROJECT.
LAB_CLUSTER_PROVIDER = env("LAB_CLUSTER_PROVIDER", default="local")
LAB_DOCKER_SOCKET = env("LAB_DOCKER_SOCKET", default="/var/run/docker.sock")
LAB_COMPOSE_PROJECT = env("LAB_COMPOSE_PROJECT", default="")
# A pool of local clusters of LAB_CLUSTER_SIZE nodes each, run from the installed RabbitMQ,
# one per slot k (1, 2, ...): nodes <prefix>c<k>n1@localhost..., files under
# LAB_CLUSTER_DIR/c<k>, AMQP ports from LAB_CLUSTER_PORT + 10 k, management ports 10000
# above, distribution ports 20000 above.
LAB_CLUSTER_DIR = env("LAB_CLUSTER_DIR", default="") or str(BASE_DIR / "var" / "cluster")
LAB_CLUSTER_SIZE = env.int("LAB_CLUSTER_SIZE", default=3)
LAB_CLUSTER_PORT = env.int("LAB_CLUSTER_PORT", default=5701)
LAB_CLUSTER_PREFIX = env("LAB_CLUSTER_PREFIX", default="lab")
# Clusters kept booted with no lab on them, for the next cluster labs to start at once
# (0: none; each lab then waits for its cluster's boot), and clusters at once at most:
# a boot takes most of a core for 15-20 s, and three at once fill a 2-core machine.
LAB_CLUSTER_WARM = env.int("LAB_CLUSTER_WARM", default=1)
LAB_CLUSTER_MAX = env.int("LAB_CLUSTER_MAX", default=3)
# A class's cluster goes down once no lab of the class has run on it for this many
# minutes (0: it stays up until the class ends); a lab's own goes with the lab.
LAB_CLUSTER_IDLE_MINUTES = env.float("LAB_CLUSTER_IDLE_MINUTES", default=15)

# --- Channels ----------------------------------------------------------------------------
# Live updates travel over RabbitMQ (labconsole/flow), so no channel layer is needed.
CHANNEL_LAYERS = {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "pika": {"level": "WARNING"},
        "aiormq": {"level": "WARNING"},
        # pika's asynchronous adapter logs each failed connection attempt and each lost
        # connection as several errors with tracebacks; the runtime says the same in one
        # line (labconsole/runtime/unit.py, bus.py), with the backoff it applies.
        "pika.adapters.utils.connection_workflow": {"level": "CRITICAL"},
        "pika.adapters.utils.io_services_utils": {"level": "CRITICAL"},
        "pika.adapters.base_connection": {"level": "CRITICAL"},
    },
}
