"""Configuration of orchestrator accounts and of the jobs the ``ops`` toolset may rerun.

``gateway.yaml`` shape (the lead nests these under ``Settings``)::

    orchestrators:
      prefect-main: {kind: prefect, url: "http://127.0.0.1:4200/api", api_key: "secret://prefect-key"}
      airflow-main: {kind: airflow, url: "http://127.0.0.1:8080", username: admin,
                     password: "secret://airflow-pw"}
      dbt: {kind: dbt_cloud, url: "https://cloud.getdbt.com", account_id: 42, token: "secret://dbt"}
      dagster: {kind: dagster, url: "http://127.0.0.1:3000", token: null}
    jobs:
      nightly_orders: {orchestrator: prefect-main, id: "orders/nightly"}   # flow/deployment
      load_dwh: {orchestrator: airflow-main, id: "load_dwh",                # dag_id
                 idempotency_window_seconds: 3600}   # same reason reruns again after 1 h (default 24 h)

Credentials are never inline: every credential field must be a ``secret://NAME`` reference that is
resolved through the vault at call time (``secret_name`` gives the vault name).
"""

from __future__ import annotations

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


OrchestratorSettings = Annotated[
    PrefectSettings | AirflowSettings | DbtCloudSettings | DagsterSettings,
    Field(discriminator="kind"),
]


class JobSettings(_Model):
    """One job the gateway may rerun: which orchestrator, and the orchestrator's own id for it.

    ``id`` is ``flow_name/deployment_name`` for Prefect, the ``dag_id`` for Airflow, the numeric job id
    for dbt Cloud, and ``[location/]job_name`` (or as the Dagster adapter documents) for Dagster.
    """

    orchestrator: str = Field(min_length=1)
    id: str = Field(min_length=1)
    idempotency_window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    """How long a rerun with the same (mode, reason) returns the run it launched instead of launching
    again (default 24 h); after that the same reason launches anew."""
