"""The server's one frozen configuration object.

``Settings`` holds every value the server reads. It is built once, in the composition root,
by ``torchwick.server.config.load_settings``. This is the one statement of precedence (lowest
to highest; ``docs/configuration.md`` repeats it for users):

1. built-in defaults (the field defaults below; TorchServe's unless noted);
2. the config file: env ``TS_CONFIG_FILE``, else ``--ts-config``, else ``./config.properties``
   in the working directory, else none;
3. ``TS_<KEY>`` environment variables, only when the file sets ``enable_envvars_config=true``
   (``TS_ALLOWED_URLS`` additionally needs ``use_env_allowed_urls=true``);
4. ``TORCHWICK_<KEY>`` environment variables, always honoured (``TORCHWICK_ALLOWED_URLS``
   also needs ``use_env_allowed_urls=true``);
5. CLI flags (``--model-store``, ``--models``, ``--log-config``, ``--ncs``; ``--enable-model-api``
   and ``--disable-token-auth`` can only switch their setting on).

Relative paths are resolved against the working directory the server starts in. Nothing else
reads ``os.environ`` or files for configuration, and nothing does so at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ALLOWED_URLS: tuple[str, ...] = ("file://.*", "http(s)?://.*")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Field names follow TorchServe's config.properties keys."""

    inference_address: str = "http://127.0.0.1:8080"
    management_address: str = "http://127.0.0.1:8081"
    metrics_address: str = "http://127.0.0.1:8082"
    enable_metrics_api: bool = True
    metrics_mode: str = "prometheus"
    model_store: Path | None = None
    #: Entries of ``load_models``/``--models``: ``all``, ``file.mar`` or ``name=file.mar``.
    load_models: tuple[str, ...] = ()
    #: The ``models=`` JSON: {name: {version: {minWorkers, maxWorkers, batchSize, ...}}}.
    models: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    #: 0 means "not set": startup models then get one worker per GPU, else per core.
    default_workers_per_model: int = 0
    #: ``None`` means all visible GPUs.
    number_of_gpu: int | None = None
    job_queue_size: int = 100
    default_response_timeout: int = 120
    default_startup_timeout: int = 120
    unregister_model_timeout: int = 120
    max_request_size: int = 6553500
    max_response_size: int = 6553500
    enable_model_api: bool = False
    disable_token_authorization: bool = False
    token_expiration_min: float = 60.0
    #: Where key_file.json is written (the server's working directory by default).
    key_file: Path = Path("key_file.json")
    #: torchwick only: a JSON file (a mounted secret) with preset, non-expiring keys
    #: ``{"inference": ..., "management": ..., "api": ...}``; unset, keys are random.
    token_file: Path | None = None
    allowed_urls: tuple[str, ...] = DEFAULT_ALLOWED_URLS
    install_py_dep_per_model: bool = False
    default_service_handler: str | None = None
    decode_input_request: bool = True
    limit_max_image_pixels: bool = True
    service_envelope: str | None = None
    cors_allowed_origin: str | None = None
    cors_allowed_methods: str | None = None
    cors_allowed_headers: str | None = None
    #: TLS: PEM private key and certificate; when both are set the HTTP listeners use HTTPS.
    private_key_file: Path | None = None
    certificate_file: Path | None = None
    #: TLS from a PKCS12 keystore (TorchServe's keys; used before the PEM files when set).
    keystore: Path | None = None
    keystore_pass: str | None = None
    keystore_type: str | None = None
    #: torch threads per worker; 0 means cores / total workers.
    worker_threads: int = 0
    #: GNU OpenMP's ``GOMP_SPINCOUNT`` for workers (how long a thread spins at a barrier
    #: before it sleeps); -1 leaves OpenMP's default. Not applied when the environment already
    #: sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (see ``workers.threads``).
    worker_omp_spin_count: int = 1000
    #: Warm spare workers kept (torch imported, waiting for a model); 0 turns them off.
    warm_workers: int = 1
    #: Seconds between worker heartbeats; a worker silent for 3 intervals is replaced.
    worker_heartbeat_s: float = 5.0
    log_location: Path = Path("logs")
    log_config: Path | None = None
    #: ``text`` or ``json``: one JSON object per line in the server and access logs.
    log_format: str = "text"
    #: ``False`` with ``--ncs``: no config snapshots are written or restored.
    snapshots_enabled: bool = True
    #: Set when the config came from a snapshot with ``model_snapshot``: the (name, archive)
    #: pairs to register at startup instead of ``load_models`` (``torchwick.server.snapshots``).
    restore_models: tuple[tuple[str, str], ...] = ()
    #: Snapshot files that were skipped (corrupt), one message each; logged at startup.
    snapshot_problems: tuple[str, ...] = ()
    foreground: bool = False
    #: Keys seen in config.properties that torchwick does not know (warned about once).
    unknown_keys: tuple[str, ...] = ()
    # --- added by the config loader (issue 3) ---
    #: The config file that was read, or None when only defaults, env and flags apply.
    config_file: Path | None = None
    #: gRPC listeners (host and port are separate keys in TorchServe).
    grpc_inference_address: str = "127.0.0.1"
    grpc_inference_port: int = 7070
    grpc_management_address: str = "127.0.0.1"
    grpc_management_port: int = 7071
    enable_grpc_ssl: bool = False
    #: gRPC connection age limits in ms; None means unlimited.
    grpc_inference_max_connection_age_ms: int | None = None
    grpc_inference_max_connection_age_grace_ms: int | None = None
    grpc_management_max_connection_age_ms: int | None = None
    grpc_management_max_connection_age_grace_ms: int | None = None
    #: Metrics definitions yaml; None means torchwick's built-in default metrics.
    metrics_config: Path | None = None
    #: Where log-mode metric files go (env ``METRICS_LOCATION``).
    metrics_location: Path = Path("logs")
    disable_system_metrics: bool = False
    #: OpenTelemetry spans per phase (needs the ``tracing`` extra; see observability/tracing).
    enable_tracing: bool = False
    #: Seconds between system metric samples.
    metric_time_interval: int = 60
    #: Latency histogram bucket bounds in seconds (None: 0.1 ms to 60 s, see
    #: ``observability.phases.DEFAULT_LATENCY_BUCKETS``).
    metrics_histogram_buckets: tuple[float, ...] | None = None
    #: Regex of environment variable names hidden from worker processes ("" hides none).
    blacklist_env_vars: str = ""
    # --- added by the model store hardening (issues 9 and 10) ---
    #: Refuse every URL registration (http, https, file), whatever ``allowed_urls`` says:
    #: only model store names are accepted.
    strict_allowed_urls: bool = False
    #: Largest archive a URL registration may download or copy into the store, in bytes.
    max_download_size: int = 20 * 1024**3
    #: Seconds one URL download may take in all (headers and body).
    download_timeout_s: float = 1800.0
    #: Seconds a download may wait for the connection or for any one read.
    download_read_timeout_s: float = 60.0
    #: Archive limits, checked on the listing and again while extracting.
    max_archive_entries: int = 20_000
    max_archive_uncompressed_size: int = 64 * 1024**3
    #: Bytes extracted at most this many times the archive's size (beyond the first 64 MiB).
    max_archive_compression_ratio: float = 100.0
    # --- connection, request and input limits (issue 10; docs/security.md) ---
    #: Seconds a connection may take to send a complete request head (from opening, or from
    #: the first byte of a later head); a connection that sends nothing is closed then.
    request_head_timeout_s: float = 10.0
    #: Seconds an idle keep-alive connection is kept after a response.
    keep_alive_timeout_s: int = 75
    #: Bytes of all request header lines together (431 past it), and their number.
    max_header_size: int = 32 * 1024
    max_header_count: int = 100
    #: Longest request target (path and query), in bytes (400 past it).
    max_url_length: int = 8192
    #: Open HTTP connections of all listeners; lowered to RLIMIT_NOFILE - fd_reserve.
    max_connections: int = 10_000
    #: File descriptors kept for the server's own use (workers, logs, listeners).
    fd_reserve: int = 128
    #: HTTP requests being served at once (503 with Retry-After past it; /ping and /metrics
    #: are exempt).
    max_inflight_requests: int = 4096
    #: Seconds a 503 for an overload or a full queue tells clients to wait (Retry-After).
    retry_after_s: int = 1
    #: Deepest nesting of JSON the server itself parses (400 past it).
    max_json_depth: int = 64
    #: Parts of one multipart/form-data body (400 past it).
    max_multipart_parts: int = 256
    #: What a plain form field's value may hold: ``utf-8`` text (TorchServe's behaviour) or
    #: ``ascii`` only (400 for anything else).
    form_value_charset: str = "utf-8"
    #: Pixels of one decoded image in the built-in vision handlers (400 past it).
    max_image_pixels: int = 50_000_000
    #: Request values and answer bodies of at least this many bytes go between the frontend
    #: and a worker through shared memory (0: never); each worker gets an arena of
    #: ``ipc_shm_size`` bytes (0: none). See docs/architecture.md, "Shared memory".
    ipc_shm_threshold: int = 256 * 1024
    ipc_shm_size: int = 64 * 1024 * 1024
    #: gRPC: concurrent streams per HTTP/2 connection, RPCs being served in all
    #: (RESOURCE_EXHAUSTED past it), seconds before an idle connection is closed, metadata
    #: bytes per call.
    grpc_max_concurrent_streams: int = 100
    grpc_max_concurrent_rpcs: int = 1000
    grpc_max_connection_idle_s: float = 300.0
    grpc_max_metadata_size: int = 16 * 1024
    #: Longest wait between two attempts to (re)start a crashed or failing worker; a model
    #: whose loads keep failing is retried at this pace for as long as it is registered.
    worker_backoff_max_s: float = 30.0
