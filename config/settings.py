"""Modelhub settings: one module, driven by the environment (see .env.example).

With no environment at all this is the embedded default: SQLite and the artifact store
under ./var, Celery tasks run in-process, models served inside the web process.

Every environment variable Modelhub reads is read here (or, for the processes that start
before Django, in config/serve.py and platform/gunicorn.conf.py) through the typed readers
of config/env.py, and listed in .env.example (tests/config/test_env_example.py checks both
ways). Importing this module writes nothing: the data folders are created at Django's
start-up (config/apps.py), the generated secret key on its first use.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import SimpleLazyObject

from config import serving
from config.env import env_bool, env_float, env_int, env_list, env_str, log_level

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("MODELHUB_DATA_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    """The configured key, or one generated once per installation and kept in DATA_DIR.

    There is deliberately no key in the code: a fresh install makes its own, the first
    time anything signs (several processes may race: the file is linked into place, so
    exactly one key wins and every process reads that one).
    """
    configured = env_str("MODELHUB_SECRET_KEY")
    if configured:
        return configured
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".secret_key.{os.getpid()}")
        staged.write_text(secrets.token_urlsafe(50))
        staged.chmod(0o600)
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    return path.read_text().strip()


SECRET_KEY = SimpleLazyObject(_secret_key)
DEBUG = env_bool("MODELHUB_DEBUG", False)
ALLOWED_HOSTS = env_list("MODELHUB_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("MODELHUB_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "config.apps.ModelhubConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "audit",
    "registry",
    "inference",
    "inference.batch",
    "inference.pipelines",
    "inference.bandits",
    "monitoring",
    "rollouts",
    "dashboard",
]

MIDDLEWARE = [
    "config.middleware.JsonErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'modelhub.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that is away for a moment must give an error quickly, not a hang.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("MODELHUB_DB_CONNECT_TIMEOUT", 5)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default: several web processes (and their threads) write one file.
    # WAL lets readers go on while one writes; `timeout` is the busy timeout a writer
    # waits for the lock; IMMEDIATE takes the write lock at BEGIN, so that two
    # transactions never both read and then fail to upgrade (which no timeout helps).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_float("MODELHUB_SQLITE_BUSY_TIMEOUT_S", 30.0),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
# Parallel test runs on one server each need their own test database.
if env_str("MODELHUB_TEST_DB_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env_str("MODELHUB_TEST_DB_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and Celery ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not REDIS_URL
REDIS_SOCKET_TIMEOUT = env_float("MODELHUB_REDIS_TIMEOUT", 2.0)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": REDIS_SOCKET_TIMEOUT, "socket_connect_timeout": REDIS_SOCKET_TIMEOUT},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
# Embedded default: no broker, tasks run in the calling process.
CELERY_TASK_ALWAYS_EAGER = env_bool("MODELHUB_CELERY_EAGER", EMBEDDED)
CELERY_TASK_EAGER_PROPAGATES = True
# A pool child killed mid-task must not lose its task: acks_late alone is not enough,
# reject_on_worker_lost re-queues it (so every task is idempotent).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Above the longest task; kept the same for broker, result backend and top level, or
# the shortest one wins. Lowered from Redis' 1 hour so that a killed worker's
# prefetched tasks come back in minutes.
CELERY_VISIBILITY_TIMEOUT = env_int("MODELHUB_CELERY_VISIBILITY_TIMEOUT", 900)
_redis_transport = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    "unacked_restore_interval": 60,
}
CELERY_BROKER_TRANSPORT_OPTIONS = dict(_redis_transport)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = dict(_redis_transport)
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "control"
# The embedded scheduler (workers/embedded_scheduler.py): with no Redis there is no beat, so
# one thread in one serving process (an fcntl lock in DATA_DIR) runs the beat schedule; the
# other processes retry the lock every EMBEDDED_SCHEDULER_RETRY_S and take over if it dies.
EMBEDDED_SCHEDULER = env_bool("MODELHUB_EMBEDDED_SCHEDULER") if env_str("MODELHUB_EMBEDDED_SCHEDULER") else EMBEDDED
EMBEDDED_SCHEDULER_RETRY_S = env_float("MODELHUB_EMBEDDED_SCHEDULER_RETRY_S", 5.0)

# --- Model registry ---------------------------------------------------------------------
ARTIFACT_STORE = Path(env_str("MODELHUB_ARTIFACT_STORE", str(DATA_DIR / "artifacts")))
MAX_ARTIFACT_BYTES = env_int("MODELHUB_MAX_ARTIFACT_BYTES", 512 * 1024 * 1024)
VALIDATION_MEMORY_LIMIT_BYTES = env_int("MODELHUB_VALIDATION_MEMORY_LIMIT_BYTES", 2 * 1024**3)
VALIDATION_TIMEOUT_S = env_float("MODELHUB_VALIDATION_TIMEOUT_S", 120.0)
# Validation leases (docs/operations.md, "Jobs"): the running task renews its lease every
# third of VALIDATION_LEASE_S; registry.validation_sweep, every VALIDATION_SWEEP_INTERVAL_S,
# re-enqueues a version whose lease lapsed (its worker died) or that stayed pending past
# the grace, and fails it after VALIDATION_MAX_ATTEMPTS starts.
VALIDATION_LEASE_S = env_float("MODELHUB_VALIDATION_LEASE_S", 30.0)
VALIDATION_SWEEP_INTERVAL_S = env_float("MODELHUB_VALIDATION_SWEEP_INTERVAL_S", 30.0)
VALIDATION_PENDING_GRACE_S = env_float("MODELHUB_VALIDATION_PENDING_GRACE_S", 60.0)
VALIDATION_MAX_ATTEMPTS = env_int("MODELHUB_VALIDATION_MAX_ATTEMPTS", 3)
# A task still running when the visibility timeout passes is delivered a second time.
if CELERY_VISIBILITY_TIMEOUT <= VALIDATION_TIMEOUT_S + 60:
    raise ImproperlyConfigured(
        f"MODELHUB_CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT} s) must stay above the longest task, "
        f"the validation's MODELHUB_VALIDATION_TIMEOUT_S ({VALIDATION_TIMEOUT_S:g} s) plus a minute"
    )

# --- Notifications (approvals) -----------------------------------------------------------
# Console by default: decisions are printed, nothing leaves the machine until configured.
EMAIL_BACKEND = env_str("MODELHUB_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("MODELHUB_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("MODELHUB_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("MODELHUB_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("MODELHUB_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("MODELHUB_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("MODELHUB_EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("MODELHUB_EMAIL_FROM", "modelhub@localhost")
# Webhook deliveries: (connect, read) seconds, and how many retries with back-off.
WEBHOOK_TIMEOUT_S = (
    env_float("MODELHUB_WEBHOOK_CONNECT_TIMEOUT_S", 3.0),
    env_float("MODELHUB_WEBHOOK_READ_TIMEOUT_S", 5.0),
)
WEBHOOK_MAX_RETRIES = env_int("MODELHUB_WEBHOOK_MAX_RETRIES", 6)

# --- HTTP ---------------------------------------------------------------------------------
# Bodies other than artifact uploads (JSON, predictions, forms) are capped here.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MODELHUB_MAX_REQUEST_BYTES", 32 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# --- Serving (inference app) -----------------------------------------------------------
# Largest prediction request body (simple JSON or V2, binary tensors included), in bytes.
PREDICT_MAX_BODY_BYTES = env_int("MODELHUB_MAX_PREDICT_BYTES", 16 * 1024 * 1024)
# Threads the ASGI front (inference/asgi.py) runs blocking prediction-path calls in.
ASGI_THREADS = env_int("MODELHUB_ASGI_THREADS", 64)
# ONNX Runtime threads per in-process session: MODELHUB_INTRA_OP_THREADS, else the cores
# shared out between the web processes (config/serving.py derives it for every server).
INTRA_OP_THREADS = serving.intra_op_threads()
# Bytes of loaded models per web process (docs/serving.md, "Density"): MODELHUB_MODEL_MEMORY_BUDGET_BYTES,
# else half the machine's memory / the web processes; 0 = no budget. Least recently used
# unpinned deployments are unloaded to make room and reloaded on their next request.
MODEL_MEMORY_BUDGET_BYTES = serving.model_memory_budget()
# Worker-pool placement (docs/serving-workers.md); the names are the ones inference/pool.py reads.
MODELHUB_POOL_REDIS_URL = env_str("MODELHUB_POOL_REDIS_URL")  # "" = REDIS_URL
MODELHUB_POOL_CONNECT_TIMEOUT = env_float("MODELHUB_POOL_CONNECT_TIMEOUT", 1.0)
MODELHUB_POOL_SOCKET_TIMEOUT = env_float("MODELHUB_POOL_SOCKET_TIMEOUT", 5.0)
MODELHUB_POOL_MAX_CONNECTIONS = env_int("MODELHUB_POOL_MAX_CONNECTIONS", 256)
# Event-loop web processes send frames straight to a warm worker's direct socket (docs/serving-workers.md).
MODELHUB_POOL_DIRECT = env_bool("MODELHUB_POOL_DIRECT", True)

# --- First run (manage.py modelhub_bootstrap) ------------------------------------------------
BOOTSTRAP_ADMIN_USER = env_str("MODELHUB_ADMIN_USER", "admin")
BOOTSTRAP_ADMIN_PASSWORD = env_str("MODELHUB_ADMIN_PASSWORD")  # "" = generated and printed once
# Admission control in each in-process batcher (docs/operations.md, "Overload"): a request
# whose expected wait (queued batches x the recent time per batch) is over this fraction
# of its deadline, or over the longest queue wait, is refused at once with 503 +
# Retry-After instead of queueing until it times out.
SERVING_ADMISSION_CONTROL = env_bool("MODELHUB_ADMISSION_CONTROL", True)
SERVING_ADMISSION_DEADLINE_FRACTION = env_float("MODELHUB_ADMISSION_DEADLINE_FRACTION", 0.5)
SERVING_MAX_QUEUE_WAIT_MS = env_float("MODELHUB_MAX_QUEUE_WAIT_MS", 5000.0)
SERVING_MAX_QUEUE_SIZE = env_int("MODELHUB_MAX_QUEUE_SIZE", 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JsonParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["config.renderers.JsonRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelhub API",
    "DESCRIPTION": "Model registry, approvals, endpoints and predictions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI is served from the sidecar package: no CDN, the machine may be offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields of one name with different choice sets (status, kind, stage) get a name per
    # set; otherwise drf-spectacular names them after a hash and warns.
    "ENUM_NAME_OVERRIDES": {
        "ModelVersionStatusEnum": "registry.models.ModelVersion.Status",
        "PromotionStatusEnum": "registry.models.PromotionRequest.Status",
        "PromotionKindEnum": "registry.models.PromotionRequest.Kind",
        "StageEnum": "registry.models.ModelVersion.Stage",
        "AlertEventKindEnum": "monitoring.models.AlertEvent.Kind",
        "BatchJobStateEnum": "inference.batch.models.BatchJob.State",
        "BatchChunkStateEnum": "inference.batch.models.BatchChunk.State",
        "BatchFormatEnum": "inference.batch.models.BatchJob.Format",
        "BatchJobKindEnum": "inference.batch.models.BatchJob.Kind",
    },
    # Every /api/ operation documents its 4xx answers with the one error schema.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.openapi.document_errors"],
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"  # created at start-up (config/apps.py)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from their folders too, so the embedded default works
# without a collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("MODELHUB_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": log_level()},
    "loggers": {"django.server": {"level": "WARNING"}},
}

# --- Monitoring (issue #5; docs/monitoring.md) -----------------------------------------------
MONITORING_ENABLED = env_bool("MODELHUB_MONITORING_ENABLED", True)
MONITORING_FLUSH_INTERVAL_S = env_float("MODELHUB_MONITORING_FLUSH_INTERVAL_S", 2.0)
MONITORING_KEY_TTL_S = env_int("MODELHUB_MONITORING_KEY_TTL_S", 6 * 3600)
MONITORING_ROLLUP_GRACE_S = env_int("MODELHUB_MONITORING_ROLLUP_GRACE_S", 90)
MONITORING_MINUTE_RETENTION_DAYS = env_int("MODELHUB_MONITORING_MINUTE_RETENTION_DAYS", 7)
MONITORING_HOUR_RETENTION_DAYS = env_int("MODELHUB_MONITORING_HOUR_RETENTION_DAYS", 180)
MONITORING_SAMPLE_RETENTION_DAYS = env_int("MODELHUB_MONITORING_SAMPLE_RETENTION_DAYS", 14)
MONITORING_SAMPLES_PER_ENDPOINT = env_int("MODELHUB_MONITORING_SAMPLES_PER_ENDPOINT", 1000)
MONITORING_DEFAULT_DRIFT_SAMPLE_RATE = env_float("MODELHUB_MONITORING_DRIFT_SAMPLE_RATE", 0.05)
MONITORING_DRIFT_WINDOW_MINUTES = env_int("MODELHUB_MONITORING_DRIFT_WINDOW_MINUTES", 60)
MONITORING_REFERENCE_FROM_TRAFFIC_HOURS = env_int("MODELHUB_MONITORING_REFERENCE_HOURS", 24)
MONITORING_ALERT_NOTIFY_TIMEOUT_S = env_float("MODELHUB_ALERT_NOTIFY_TIMEOUT_S", 5.0)
# Beat-schedule intervals monitoring's rules depend on (workers/celery.py schedules them):
# a drift rule's window is at least the drift interval; the scheduler heartbeat runs every
# 30 s (or every alert evaluation, if that is more often) and is stale after three.
MONITORING_ALERT_EVAL_INTERVAL_S = env_float("MODELHUB_ALERT_EVAL_INTERVAL_S", 60.0)
MONITORING_DRIFT_INTERVAL_S = env_float("MODELHUB_MONITORING_DRIFT_INTERVAL_S", 300.0)
MONITORING_SCHEDULER_HEARTBEAT_S = min(30.0, MONITORING_ALERT_EVAL_INTERVAL_S)
MONITORING_METRICS_TOKEN = env_str("MODELHUB_METRICS_TOKEN")

# --- Batch inference jobs (issue #15; docs/batch.md) ------------------------------------------
BATCH_STORE = Path(env_str("MODELHUB_BATCH_STORE") or str(DATA_DIR / "batch"))
# Jobs may read files inside this folder by path (never outside it); empty: uploads only.
BATCH_DATA_DIR = env_str("MODELHUB_BATCH_DATA_DIR", "")
BATCH_MAX_INPUT_BYTES = env_int("MODELHUB_BATCH_MAX_INPUT_BYTES", 2 * 1024**3)
BATCH_QUEUE = env_str("MODELHUB_BATCH_QUEUE", "batch")
# Jobs with device=gpu: every step goes to this queue, consumed by workers on GPU hosts.
BATCH_GPU_QUEUE = env_str("MODELHUB_BATCH_GPU_QUEUE", "batch_gpu")
BATCH_CHUNK_ROWS = env_int("MODELHUB_BATCH_CHUNK_ROWS", 50_000)
# The cap keeps a chunk well inside CELERY_VISIBILITY_TIMEOUT at any sane model speed.
BATCH_MAX_CHUNK_ROWS = env_int("MODELHUB_BATCH_MAX_CHUNK_ROWS", 200_000)
BATCH_INFER_ROWS = env_int("MODELHUB_BATCH_INFER_ROWS", 1024)
BATCH_LEASE_S = env_float("MODELHUB_BATCH_LEASE_S", 60.0)
BATCH_CHUNK_MAX_ATTEMPTS = env_int("MODELHUB_BATCH_CHUNK_MAX_ATTEMPTS", 3)
BATCH_STALL_S = env_float("MODELHUB_BATCH_STALL_S", 600.0)
BATCH_SWEEP_INTERVAL_S = env_float("MODELHUB_BATCH_SWEEP_INTERVAL_S", 60.0)
BATCH_RETENTION_DAYS = env_int("MODELHUB_BATCH_RETENTION_DAYS", 7)
BATCH_DISK_BUDGET_BYTES = env_int("MODELHUB_BATCH_DISK_BUDGET_BYTES", 20 * 1024**3)
BATCH_DRY_RUN_MAX_ROWS = env_int("MODELHUB_BATCH_DRY_RUN_MAX_ROWS", 1000)
BATCH_INTRA_OP_THREADS = env_int("MODELHUB_BATCH_INTRA_OP_THREADS", 0)
BATCH_MODELS_KEPT = env_int("MODELHUB_BATCH_MODELS_KEPT", 2)
# Feature lookups with a Feast source (docs/pipelines.md, "Feast feature servers") may call
# only these servers (base URLs, comma-separated); empty: Feast sources are refused when saved.
FEAST_SERVERS = [url.rstrip("/") for url in env_list("MODELHUB_FEAST_SERVERS", [])]
# Bandit routers (docs/pipelines.md, "Routers and feedback"): how often a process re-reads
# the arm statistics, how long a decision stays in the feedback ledger, how often the
# sweep trims the ledger and snapshots the statistics to the database.
BANDIT_REFRESH_S = env_float("MODELHUB_BANDIT_REFRESH_S", 1.0)
BANDIT_LEDGER_RETENTION_S = env_float("MODELHUB_BANDIT_LEDGER_RETENTION_S", 7 * 86400.0)
BANDIT_SWEEP_INTERVAL_S = env_float("MODELHUB_BANDIT_SWEEP_INTERVAL_S", 60.0)
# The feedback ledger's writes leave the request path (Redis or database store): each process
# buffers its decisions and a background thread writes them every FLUSH_MS, in one Redis
# pipeline or one database transaction (0: written inline, in the request, as before); at
# most BUFFER wait, more are dropped and counted.
BANDIT_LEDGER_FLUSH_MS = env_float("MODELHUB_BANDIT_LEDGER_FLUSH_MS", 50.0)
BANDIT_LEDGER_BUFFER = env_int("MODELHUB_BANDIT_LEDGER_BUFFER", 10_000)
if BANDIT_LEDGER_FLUSH_MS < 0 or BANDIT_LEDGER_BUFFER < 1:
    raise ImproperlyConfigured("MODELHUB_BANDIT_LEDGER_FLUSH_MS must be >= 0 and MODELHUB_BANDIT_LEDGER_BUFFER >= 1")
if BANDIT_LEDGER_RETENTION_S < 1 or BANDIT_REFRESH_S < 0:
    raise ImproperlyConfigured("MODELHUB_BANDIT_LEDGER_RETENTION_S must be >= 1 and MODELHUB_BANDIT_REFRESH_S >= 0")
if BATCH_LEASE_S * 2 > CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured("MODELHUB_BATCH_LEASE_S must be under half of MODELHUB_CELERY_VISIBILITY_TIMEOUT")
