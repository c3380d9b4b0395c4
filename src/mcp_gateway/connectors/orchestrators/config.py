"""Configuration of orchestrator accounts and of the jobs the ``ops`` toolset may rerun.

``gateway.yaml`` shape (the lead nests these under ``Settings``)::

    orchestrators:
      prefect-main: {kind: prefect, url: "http://127.0.0.1:4200/api", api_key: "secret://prefect-key"}
      airflow-main: {kind: airflow, url: "http://127.0.0.1:8080", username: admin,
                     password: "secret://airflow-pw"}
      dbt: {kind: dbt_cloud, url: "https://cloud.getdbt.com", account_id: 42, token: "secret://dbt"}
      dagster: {kind: dagster, url: "http://127.0.0.1:3000", token: null}
      dbt-local: {kind: dbt_core, project_dir: /srv/dbt/analytics, executable: /opt/dbt/bin/dbt,
                  secret_env: {DBT_ENV_SECRET_PG_PASSWORD: "secret://dbt-pg-password"}}
    jobs:
      nightly_orders: {orchestrator: prefect-main, id: "orders/nightly"}   # flow/deployment
      load_dwh: {orchestrator: airflow-main, id: "load_dwh",                # dag_id
                 idempotency_window_seconds: 3600}   # same reason reruns again after 1 h (default 24 h)
      pipeline: {orchestrator: dbt-local, id: "source:sales.opportunities+"}  # a dbt selector

Credentials are never inline: every credential field must be a ``secret://NAME`` reference that is
resolved through the vault at call time (``secret_name`` gives the vault name).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mcp_gateway.types import SECRET_REF


def _secret_ref(value: str) -> str:
    if not SECRET_REF.fullmatch(value):
        raise ValueError("credentials must be a `secret://NAME` reference, not an inline value")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")
    return value.rstrip("/")


SecretRef = Annotated[str, AfterValidator(_secret_ref)]
"""A ``secret://NAME`` reference (validated); never a credential value."""

HttpUrl = Annotated[str, AfterValidator(_http_url)]


def secret_name(ref: str) -> str:
    """The vault name inside a ``secret://NAME`` reference.

    Raises:
        ValueError: ``ref`` is not a reference (the message does not echo it: it may be a credential).
    """
    match = SECRET_REF.fullmatch(ref)
    if match is None:
        raise ValueError("not a `secret://NAME` reference")
    return match.group(1)


class _Model(BaseModel):
    # An inline credential that fails validation must not be echoed back in the config error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Common(_Model):
    url: HttpUrl
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    allow_private_network: bool = False
    """Let requests reach loopback, private and link-local addresses (off: the SSRF guard refuses them)."""


class _Retrying(_Common):
    # Retries of a transient answer (429/502/503/504) or a refused connection, with back-off. Only
    # for APIs whose state-changing calls are idempotent on the server (see ``_rest.send``).
    retries: int = Field(default=3, ge=0, le=10)


class PrefectSettings(_Retrying):
    """A Prefect 3 server or Prefect Cloud workspace.

    ``url`` is the API root (``http://host:4200/api`` or the Cloud workspace API URL).
    ``api_key`` is sent as ``Authorization: Bearer`` when set.
    """

    kind: Literal["prefect"]
    api_key: SecretRef | None = None


class AirflowSettings(_Retrying):
    """An Apache Airflow 3 API server (REST API v2, JWT from ``POST /auth/token``).

    ``url`` is the server root (``http://host:8080``), without ``/api/v2``.
    """

    kind: Literal["airflow"]
    username: str = Field(min_length=1)
    password: SecretRef


class DbtCloudSettings(_Common):
    """A dbt Cloud account (``url`` is the access URL, e.g. ``https://cloud.getdbt.com``)."""

    kind: Literal["dbt_cloud"]
    account_id: int = Field(gt=0)
    token: SecretRef


class DagsterSettings(_Common):
    """A Dagster webserver / Dagster+ deployment (GraphQL at ``{url}/graphql``)."""

    kind: Literal["dagster"]
    token: SecretRef | None = None


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
SECRET_ENV_PREFIX = "DBT_ENV_SECRET_"  # noqa: S105 - a variable name prefix, not a password
"""dbt scrubs the values of environment variables with this prefix from its own logs and artifacts."""
VarValue = str | int | float | bool | None


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable name `{name}` must match {_ENV_NAME.pattern}")
    return value


def _secret_env_names(value: dict[str, str]) -> dict[str, str]:
    for name in _env_names(value):
        if not name.startswith(SECRET_ENV_PREFIX):
            raise ValueError(f"secret environment variable `{name}` must start with `{SECRET_ENV_PREFIX}`")
    return value


class DbtCoreSettings(_Model):
    """A dbt Core project run as a subprocess (``dbt build``) on the gateway's host.

    A job's ``id`` is a dbt selector (``--select`` syntax; several separated by spaces). Credentials
    reach dbt only as environment variables: ``secret_env`` maps a ``DBT_ENV_SECRET_*`` name (which
    dbt itself scrubs from its logs) to a vault reference, and the profile reads it with ``env_var``.
    dbt runs with no other environment of the gateway's, never downloads packages (no ``dbt deps``),
    and writes its artifacts under the gateway's data dir, never into ``project_dir``.
    """

    kind: Literal["dbt_core"]
    project_dir: str = Field(min_length=1)
    profiles_dir: str | None = None
    """Directory holding ``profiles.yml`` (default: ``project_dir``)."""
    target: str | None = None
    """The profile target (default: the profile's own default)."""
    executable: str = Field(default="dbt", min_length=1)
    """The ``dbt`` program: a path (e.g. ``.venv-dbt/bin/dbt``) or a name looked up on ``PATH``."""
    env: Annotated[dict[str, str], AfterValidator(_env_names)] = Field(default_factory=dict)
    """Plain (non-secret) environment variables for the profile, e.g. ``DBT_PG_SCHEMA``."""
    secret_env: Annotated[dict[str, SecretRef], AfterValidator(_secret_env_names)] = Field(
        default_factory=dict
    )
    vars: dict[str, VarValue] = Field(default_factory=dict)
    """Project variables passed to every run (``--vars``)."""
    timeout_seconds: float = Field(default=900.0, gt=0, le=86_400)
    """A dbt invocation still running after this is killed and reported as failed."""
    threads: int | None = Field(default=None, ge=1, le=64)
    source_freshness: bool = True
    """Failure context also runs ``dbt source freshness`` on the failed nodes' upstream sources."""
    artifacts_dir: str | None = None
    """Where run artifacts are kept (default: ``<data_dir>/dbt/<orchestrator name>``)."""


OrchestratorSettings = Annotated[
    PrefectSettings | AirflowSettings | DbtCloudSettings | DagsterSettings | DbtCoreSettings,
    Field(discriminator="kind"),
]
RestSettings = PrefectSettings | AirflowSettings | DbtCloudSettings | DagsterSettings
"""The orchestrators reached over HTTP (``_rest.py``)."""


class JobSettings(_Model):
    """One job the gateway may rerun: which orchestrator, and the orchestrator's own id for it.

    ``id`` is ``flow_name/deployment_name`` for Prefect, the ``dag_id`` for Airflow, the numeric job id
    for dbt Cloud, ``[location/]job_name`` (or as the Dagster adapter documents) for Dagster, and a
    dbt selector (``tag:nightly``, ``source:sales.opportunities+``) for dbt Core.
    """

    orchestrator: str = Field(min_length=1)
    id: str = Field(min_length=1)
    idempotency_window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    """How long a rerun with the same (mode, reason) returns the run it launched instead of launching
    again (default 24 h); after that the same reason launches anew."""
