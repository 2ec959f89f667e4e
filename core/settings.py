"""Every knob of the service in one place, read from `UARNVC_*` environment variables.

One `Settings` object is the only reader of the environment, so the API, the workers, the
CLI and the deploy files agree on names (tests check the compose/k8s files against the
field names here). Defaults give the embedded service: everything under `./data`, a
Celery `filesystem://` broker and a local-directory object store, CPU.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "UARNVC_"
# A job estimated longer than this is refused by the API unless UARNVC_MAX_ENCODE_SECONDS
# says otherwise: a worker busy for more than a working day is a mistake more often than
# a plan (docs/service.md, "Encode-time estimates").
API_MAX_ENCODE_SECONDS = 6 * 3600.0


class Settings(BaseSettings):
    """Service configuration; field `foo` is read from `UARNVC_FOO`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Root of every embedded default.")
    broker_url: str | None = Field(
        None, description="Celery broker; default: `filesystem://` under the data dir."
    )
    result_backend: str | None = Field(
        None, description="Celery result backend; unused by the service (state is in the store)."
    )
    store_url: str | None = Field(
        None, description="`file:///path` or `s3://bucket/prefix`; default: data_dir/store."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); None means AWS."
    )
    s3_region: str | None = Field(None, description="S3 region; credentials come the boto3 way.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer keys; empty = no auth."
    )
    max_upload_bytes: int = Field(2 * 1024**3, gt=0)
    max_pixels: int = Field(3840 * 2160, gt=0, description="Per frame, of the source.")
    max_frames: int = Field(100_000, gt=0)
    device: str = Field("cpu", description="Torch device for training: cpu, cuda, cuda:1, ...")
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads in workers.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    visibility_timeout: int = Field(
        6 * 3600, ge=1, description="Seconds before Redis redelivers an unacked task."
    )
    lease_seconds: int = Field(
        30, ge=2, description="Clip and split lease lifetime; renewed every third of it."
    )
    reaper_interval: float = Field(
        10.0,
        ge=0,
        description="Seconds between a worker's sweeps for lapsed leases (docs/service.md, "
        "'Recovery'); 0 = no reaper in this worker.",
    )
    reaper_stall_seconds: float = Field(
        300.0,
        gt=0,
        description="A job with no lease, no queued message and no progress for this long "
        "has its next step re-queued.",
    )
    poll_interval: float = Field(0.5, gt=0, description="Streaming endpoints' store polling.")
    log_level: str = "INFO"
    rate_limit: float = Field(
        50.0, ge=0, description="Per API key (or client address), /v1 requests/s; 0 = off."
    )
    rate_burst: int = Field(100, ge=1, description="Token-bucket size of the rate limit.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; none = off."
    )
    log_json: bool = Field(
        False, description="One JSON object per log line, with job_id/clip (for shippers)."
    )
    metrics_scan_seconds: float = Field(
        10.0, ge=0, description="How long /metrics reuses its scan of the store and queues."
    )
    # Security and quotas (docs/reliability.md, "Security"). Quotas are per API key
    # ("local" without keys) and counted by each API process; 0 turns one off.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API answers to; empty: loopback names without API keys, "
        "any with keys; `*`: any.",
    )
    public_docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics on this port instead of the API's."
    )
    max_active_jobs: int = Field(8, ge=0, description="Unfinished jobs per key.")
    max_queued_jobs: int = Field(4, ge=0, description="Jobs per key not started by a worker.")
    max_job_compute: float = Field(
        1e12, ge=0, description="Per job: clips x training steps x model parameters."
    )
    max_clips_per_job: int = Field(4096, ge=0, description="Clips one job may plan.")
    max_streams_per_key: int = Field(
        16, ge=0, description="Open /events and /bitstream streams per key."
    )
    max_decodes_per_key: int = Field(2, ge=0, description="Concurrent /decode streams per key.")
    max_decodes: int = Field(4, ge=0, description="Concurrent /decode streams per API process.")
    # Resumable uploads and webhooks (docs/service.md, "Resumable uploads", "Webhooks").
    upload_expire_seconds: int = Field(
        24 * 3600, ge=1, description="An unfinished tus upload is deleted this long after creation."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks signing secret (`whsec_` + base64); none = unsigned."
    )
    webhook_urls: dict[str, str] = Field(
        default_factory=dict, description='Default webhook URL per API key, JSON: {"key": "url"}.'
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhook URLs resolving to loopback, link-local or private IPs."
    )
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds per webhook delivery attempt.")
    webhook_retries: int = Field(
        10, ge=0, description="Delivery retries after the first attempt (backoff 2^n s, <= 10 min)."
    )
    max_encode_seconds: float | None = Field(
        None,
        ge=0,
        description="Refuse encodes estimated to take longer (core/codec/estimate.py); "
        "unset: off for `uarnvc encode`, 6 h for the API; 0: off.",
    )
    # Load shedding (api/shed.py): over either, new /v1 requests get 503 at once.
    shed_max_inflight: int = Field(
        64, ge=0, description="Requests in flight per API process (streams excluded); 0 = off."
    )
    shed_max_lag: float = Field(
        0.25, ge=0, description="Event-loop lag in seconds above which requests are shed; 0 = off."
    )
    access_log: bool = Field(
        False, description="One log line per HTTP request (uvicorn's access log)."
    )
    worker_nice: int = Field(
        0, ge=0, le=19, description="CPU niceness a worker process adds to itself at start."
    )

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @property
    def api_max_encode_seconds(self) -> float | None:
        """The API's limit on an encode's estimated time (None: off)."""
        if self.max_encode_seconds is None:
            return API_MAX_ENCODE_SECONDS
        return self.max_encode_seconds or None

    @property
    def cli_max_encode_seconds(self) -> float | None:
        """`uarnvc encode`'s limit: only what the variable sets (None: off)."""
        return self.max_encode_seconds or None

    @property
    def calibration_dir(self) -> Path:
        """Encode-time calibrations, one JSON per device and configuration."""
        return self.data_dir.resolve() / "calibration"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded filesystem broker (shared by API and worker processes)."""
        return self.data_dir.resolve() / "broker"

    @property
    def effective_store_url(self) -> str:
        return self.store_url or (self.data_dir.resolve() / "store").as_uri()

    @property
    def tmp_dir(self) -> Path:
        """Scratch space for uploads and clip files, on the same disk as the data dir."""
        return self.data_dir.resolve() / "tmp"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (call `get_settings.cache_clear()` in tests)."""
    return Settings()
