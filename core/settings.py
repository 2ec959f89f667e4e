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

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "UARNVC_"


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
    lease_seconds: int = Field(60, ge=2, description="Clip lease lifetime; renewed while alive.")
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

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

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
