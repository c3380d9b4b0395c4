"""``mcp-gateway incidents``: the quality monitors' incidents, for the people who own the tables.

``list`` shows the newest incidents (all, or of one table or job; ``--open`` only those still open);
``show ID`` one incident whole: its failing checks and, once recovered, the governed calls that fixed
it (by audit call id and agent). Both only read: a SQLite store that does not exist yet is not
created (there are no incidents), a PostgreSQL one is read as the gateway set it up.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_gateway.cli.common import ConfigOpt, JsonOpt, fail, iso, read_settings
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mcp_gateway.config import Settings
    from mcp_gateway.incidents.model import Incident
    from mcp_gateway.incidents.store import IncidentStore

incidents_app = typer.Typer(help="See the quality monitors' incidents.", no_args_is_help=True)


def _store(settings: Settings) -> IncidentStore | None:
    """The incident store, read as it is (None: a SQLite store that does not exist yet)."""
    from mcp_gateway.app.quality import INCIDENTS_FILE
    from mcp_gateway.incidents.store import open_incident_store

    if settings.store is not None:
        return open_incident_store(dsn=settings.store.url, schema=settings.store.schema_name, create=False)
    path = settings.data_dir / INCIDENTS_FILE
    return open_incident_store(path=path) if path.is_file() else None


def _line(incident: Incident) -> str:
    checks = ",".join(str(c.get("check", "?")) for c in incident.failing) or "-"
    ended = f"closed {iso(incident.closed_at)}" if incident.closed_at is not None else "open"
    return (
        f"{incident.id}\t{incident.status}\t{incident.monitor}\t{incident.table}\tjob {incident.job or '-'}"
        f"\topened {iso(incident.opened_at)}\t{ended}\truns {incident.occurrences}\tfailing {checks}"
        f"\tfixes {len(incident.fixes)}"
    )


@incidents_app.command("list")
def incidents_list(
    config: ConfigOpt = None,
    table: Annotated[
        str | None, typer.Option("--table", metavar="TABLE", help="only this table's (warehouse.ns.table)")
    ] = None,
    job: Annotated[str | None, typer.Option("--job", metavar="JOB", help="only this job's")] = None,
    only_open: Annotated[bool, typer.Option("--open", help="only incidents still open")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="at most this many")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest incidents: id, status, monitor, table, job, opened, closed, failing runs, the checks
    failing last, and how many governed calls fixed it (times in UTC)."""
    if table is not None and job is not None:
        raise fail("give --table or --job, not both", code=2)
    settings = read_settings(config)
    try:
        store = _store(settings)
        if store is None:
            return
        try:
            found = store.history(table=table, job=job, limit=limit if not only_open else 1000)
        finally:
            store.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    shown = [i for i in found if not only_open or i.status == "open"][:limit]
    for incident in shown:
        typer.echo(json.dumps(incident.as_dict(), sort_keys=True) if as_json else _line(incident))


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="inc_... (or incident://inc_...)")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One incident: its monitor, table and job, when it opened and closed, the checks failing last
    (value and bounds), and the governed calls that fixed it."""
    wanted = incident_id.removeprefix("incident://")
    settings = read_settings(config)
    try:
        store = _store(settings)
        incident = None
        if store is not None:
            try:
                incident = store.get(wanted)
            finally:
                store.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    if incident is None:
        raise fail(f"no incident `{wanted[:64]}`")
    if as_json:
        typer.echo(json.dumps(incident.as_dict(), sort_keys=True))
        return
    typer.echo(_line(incident))
    for check in incident.failing:
        bounds = f"min {check.get('min', '-')}, max {check.get('max', '-')}"
        typer.echo(f"  failing\t{check.get('check', '?')}\tvalue {check.get('value', '-')}\t{bounds}")
    for fix in incident.fixes:
        typer.echo(
            f"  fixed by\t{fix.tool}\tagent {fix.agent}\tcall {fix.call_id}\taudit seq {fix.audit_seq}"
        )
