"""``embedtrain-admin``: operator commands that act on the database directly (migrate, API keys)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.store.db import transaction
from core.store.keys import UnusableKey, create_key, has_keys, import_environment_key, revoke_key
from core.store.schema import MIGRATIONS, schema_problem
from core.store.settings import Settings, get_settings
from core.store.tables import ApiKey

app = typer.Typer(help="Operator commands: database migrations and API keys.", no_args_is_help=True)
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys, name="keys")
PLACEHOLDER = "change-me"  # in .env.example's admin key: a key anyone can read, never to be stored
NEW_KEY = "python -c \"import secrets; print('et_' + secrets.token_hex(6) + '_' + secrets.token_urlsafe(32))\""


def fail(message: str) -> NoReturn:
    """End the command with exit code 1 and one line on stderr."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def reaching(settings: Settings) -> Iterator[None]:
    """A database that cannot be reached or opened ends the command with one line naming it (password hidden) and
    the driver's reason, and exit code 1, rather than a traceback."""
    try:
        yield
    except OperationalError as error:
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = " ".join(str(error.orig).split())
        fail(f"cannot use the database at {url} (EMBEDTRAIN_DATABASE_URL): {reason}")


@contextmanager
def migrated(settings: Settings) -> Iterator[Session]:
    """A transaction on the database, once it holds this version's schema (else what to run, and exit code 1)."""
    with reaching(settings), transaction(settings) as session:
        if problem := schema_problem(session.connection()):
            fail(problem)
        yield session


@app.command()
def migrate() -> None:
    """Apply the Alembic migrations (alembic upgrade head) to EMBEDTRAIN_DATABASE_URL."""
    from alembic import command
    from alembic.config import Config

    if not MIGRATIONS.is_dir():
        fail(f"no migrations at {MIGRATIONS}: this install holds the code alone; run this from the project's checkout, "
             "or install it editable (pip install -e .) as the Docker image does")  # fmt: skip
    config = Config(str(MIGRATIONS.parent / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    with reaching(get_settings()):
        command.upgrade(config, "head")


@app.command()
def bootstrap(owner: str = typer.Option("admin", help="Owner name of the first admin key.")) -> None:
    """Store EMBEDTRAIN_ADMIN_KEY as an admin key if it is set (Compose's migrate service), revoking the key it held
    before; else create the first admin key if none exists and print it once (the embedded default's first run)."""
    settings = get_settings()
    given = settings.admin_key.get_secret_value() if settings.admin_key is not None else None
    if given is not None and PLACEHOLDER in given:  # anyone who has read .env.example would hold an admin key
        fail(f"EMBEDTRAIN_ADMIN_KEY is still .env.example's placeholder ({PLACEHOLDER!r}); set a secret one: {NEW_KEY}")
    if given is None:
        with migrated(settings) as session:
            if has_keys(session):
                typer.echo("API keys exist already; create more with: embedtrain-admin keys create --owner NAME")
                return
            _, key = create_key(session, owner, "admin", is_admin=True)
        typer.echo(f"Admin API key (shown once, store it now): {key}")
        return
    try:
        with migrated(settings) as session:
            replaced = [row.prefix for row in import_environment_key(session, given, owner)]
    except UnusableKey as why:  # the rest of the service runs on; the keys stay as they were
        typer.echo(f"warning: EMBEDTRAIN_ADMIN_KEY is not an admin key: {why}; set a new one: {NEW_KEY}", err=True)
        return
    for prefix in replaced:
        typer.echo(f"revoked the admin key EMBEDTRAIN_ADMIN_KEY held before (prefix {prefix})")
    typer.echo("admin key taken from EMBEDTRAIN_ADMIN_KEY")


@keys.command("create")
def keys_create(
    owner: str = typer.Option(..., help="Tenant that owns what this key creates."),
    name: str = typer.Option("default", help="A label for the key."),
    admin: bool = typer.Option(False, help="May see every tenant's objects."),
) -> None:
    """Create a key and print it once; only its hash is stored."""
    with migrated(get_settings()) as session:
        row, key = create_key(session, owner, name, is_admin=admin)
    typer.echo(key)
    typer.echo(f"(id {row.id}, prefix {row.prefix}; shown once)", err=True)


@keys.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id or prefix.")) -> None:
    """Revoke a key; requests with it answer 401 from then on."""
    with migrated(get_settings()) as session:
        if not revoke_key(session, key_id):
            typer.echo(f"no key with id or prefix {key_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@keys.command("list")
def keys_list() -> None:
    """List keys (never the keys themselves)."""
    from sqlalchemy import select

    with migrated(get_settings()) as session:
        for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
            state = "revoked" if row.revoked_at else "active"
            source = "  from EMBEDTRAIN_ADMIN_KEY" if row.from_environment else ""
            typer.echo(f"{row.id}  prefix={row.prefix}  owner={row.owner}  admin={row.is_admin}  {state}{source}")


if __name__ == "__main__":
    app()
