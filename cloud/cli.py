"""``door-cloud``: migrate, seed, serve and rotate the key of the cloud.

Theory of operation: a thin adapter over the cloud's modules. ``migrate`` runs
the Alembic migrations (:mod:`cloud.migrate`); ``seed-demo`` migrates, fills an
empty database with the demo world (:mod:`cloud.seed`) and prints its ids,
bearer tokens and card codes as JSON; ``serve`` runs the HTTP API under uvicorn
with the email sender and, given ``--mqtt``, the MQTT bridge in the same event
loop; ``rotate-key`` makes the next signing key and lists the doors still on an
older one; ``register-door`` registers a lock from the registration JSON that
``door-controller provision`` wrote (as the cloud's operator: any property).
Every command takes ``--database URL`` (default ``$DATABASE_URL``, else a SQLite
file in the working directory).

Every failure is one line on stderr, never a traceback: exit status 2 for bad
usage (flags), 1 for a bad or unreachable database or a refused operation.
This is the one place of the cloud that reads the machine's randomness
(``os.urandom``) and, through :class:`~cloud.settings.CloudSettings`, its clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.util import CommandError
from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from infra.cli_args import OneLineParser, mqtt_url, port

from .db import database_url, make_engine, session_factory
from .email import EmailSender, backend_from_url
from .errors import CloudError
from .keys import current_key, rotate
from .migrate import current_revision, head_revision, migrate
from .models import CloudKey, Door, Portfolio
from .seed import SeedResult, seed_demo
from .service import CloudService
from .settings import CloudSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["main"]

PROG = "door-cloud"


class CliError(Exception):
    """A failure to report as one line (exit status 1)."""


def _smtp_url(text: str) -> str:
    try:
        backend_from_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="The door-lock cloud.")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    helps = {
        "migrate": "create or upgrade the database schema",
        "seed-demo": "fill an empty database with the demo world; print its tokens as JSON",
        "serve": "run the HTTP API, the email sender and (with --mqtt) the MQTT bridge",
        "rotate-key": "make the next cloud signing key; list doors still on an older one",
        "register-door": "register a provisioned lock from its registration JSON",
    }
    sub = {name: commands.add_parser(name, help=text) for name, text in helps.items()}
    for command in sub.values():
        command.add_argument(
            "--database",
            metavar="URL",
            help="SQLAlchemy URL, e.g. postgresql://user@host/db "
            "(default: $DATABASE_URL, else sqlite:///latchsim-cloud.db)",
        )
    register = sub["register-door"]
    register.add_argument(
        "registration", type=Path, help="the JSON `door-controller provision` wrote"
    )
    register.add_argument("--name", required=True, help="the door's name, e.g. 'Tower gym'")
    register.add_argument(
        "--online", action="store_true", help="an internet door (MQTT); default: BLE only"
    )
    register.add_argument(
        "--property", metavar="ID", help="the property (default: the registration's)"
    )
    serve = sub["serve"]
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=port, default=8000, help="TCP port to listen on")
    serve.add_argument(
        "--mqtt", type=mqtt_url, metavar="URL", help="broker, e.g. mqtt://127.0.0.1:1883"
    )
    serve.add_argument(
        "--smtp",
        type=_smtp_url,
        metavar="URL",
        help="mail server, e.g. smtp://127.0.0.1:8025 (default: $SMTP_URL, else log only)",
    )
    return parser


# --- the database -----------------------------------------------------------------------


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _url(args: argparse.Namespace) -> str:
    url: str = args.database or database_url()
    return url


def _engine(url: str) -> Engine:
    """An engine for ``url``; a URL SQLAlchemy cannot use is a :class:`CliError`."""
    try:
        return make_engine(url)
    except ArgumentError:
        raise CliError(f"not a database URL: {_safe(url)}") from None
    except ImportError as exc:  # the URL names a driver that is not installed
        raise CliError(f"database {_safe(url)}: no driver for it ({exc})") from None


def _require_migrated(engine: Engine, url: str) -> None:
    revision, head = current_revision(engine), head_revision()
    if revision != head:
        state = "has no schema" if revision is None else f"is at revision {revision}"
        raise CliError(f"database {_safe(url)} {state}; run `{PROG} migrate` (head is {head})")


def _db_error(exc: SQLAlchemyError | CommandError, url: str) -> str:
    """One line naming the database and what went wrong (never the SQL or a traceback)."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(detail).strip().splitlines()
    return f"database {_safe(url)}: {lines[0] if lines else type(detail).__name__}"


# --- commands ---------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    url = _url(args)
    engine = _engine(url)
    try:
        revision = migrate(engine=engine)
    finally:
        engine.dispose()
    print(f"database {_safe(url)} is at revision {revision} (head)")
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    url = _url(args)
    engine = _engine(url)
    try:
        migrate(engine=engine)
        with session_factory(engine).begin() as session:
            if session.execute(select(Portfolio.id).limit(1)).first() is not None:
                raise CliError(f"database {_safe(url)} already holds data; seed an empty one")
            seeded = seed_demo(session, os.urandom)
            public = current_key(session).public
    finally:
        engine.dispose()
    print(json.dumps(_seed_json(seeded, public), indent=2))
    return 0


def _seed_json(seeded: SeedResult, cloud_public: bytes) -> dict[str, Any]:
    return {
        "cloud_public_key": cloud_public.hex(),
        "managers": {
            name: {"id": ident, "token": seeded.tokens[name]}
            for name, ident in seeded.managers.items()
        },
        "residents": {
            name: {"id": ident, "token": seeded.tokens[name]}
            for name, ident in seeded.people.items()
        },
        "cards": {
            label: {"uid": uid, "activation_code": code}
            for label, (uid, code) in seeded.cards.items()
        },
        "doors": seeded.doors,
        "properties": seeded.properties,
        "portfolios": seeded.portfolios,
    }


def _rotate_key(args: argparse.Namespace) -> int:
    url = _url(args)
    engine = _engine(url)
    try:
        _require_migrated(engine, url)
        with session_factory(engine).begin() as session:
            if session.execute(select(CloudKey.epoch).limit(1)).first() is None:
                raise CliError(f"database {_safe(url)} has no cloud key yet; seed it first")
            rotation = rotate(session, os.urandom)
            behind = session.execute(
                select(Door.id, Door.name, Door.key_epoch)
                .where(Door.key_epoch < rotation.new_epoch)
                .order_by(Door.name)
            ).all()
    finally:
        engine.dispose()
    print(f"cloud key epoch {rotation.new_epoch}: public key {rotation.new_public_key.hex()}")
    if not behind:
        print("every door is on the new epoch")
    else:
        print(f"{len(behind)} door(s) behind (they need the KEY_ROTATION):")
    for door_id, name, epoch in behind:
        print(f"  {door_id}  epoch {epoch}  {name}")
    return 0


def _register_door(args: argparse.Namespace) -> int:
    fields = _registration(args.registration)
    url = _url(args)
    engine = _engine(url)
    try:
        _require_migrated(engine, url)
        with session_factory(engine).begin() as session:
            cloud = CloudService(session, int(time.time()), os.urandom)
            try:
                changes = cloud.register_door(
                    None,
                    door_id=fields["door_id"].hex(),
                    property_id=args.property or fields["property_id"].hex(),
                    name=args.name,
                    online=args.online,
                    identity_public=fields["identity_public"],
                    sealing_public=fields["sealing_public"],
                    doorcode_secret=fields["doorcode_secret"],
                )
            except CloudError as exc:
                raise CliError(str(exc)) from None
    finally:
        engine.dispose()
    kind = "online (MQTT)" if args.online else "BLE only"
    print(f"registered door {fields['door_id'].hex()} ({args.name}, {kind})")
    print(f"its first list: version {changes[0].version}" if changes else "its list is empty")
    return 0


_REGISTRATION_FIELDS = {
    "door_id": 16,
    "property_id": 16,
    "identity_public": 32,
    "sealing_public": 32,
    "doorcode_secret": 32,
}


def _registration(path: Path) -> dict[str, bytes]:
    """The registration's fields as bytes; a file that is not one is a :class:`CliError`."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: not a registration file ({exc})") from None
    if not isinstance(document, dict):
        raise CliError(f"{path}: not a registration file (a JSON object is expected)")
    fields = {}
    for name, size in _REGISTRATION_FIELDS.items():
        value = document.get(name)
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != size:
            raise CliError(f"{path}: {name} must be {size} bytes in hex (from door-controller)")
        fields[name] = raw
    return fields


def _serve(args: argparse.Namespace) -> int:
    url = _url(args)
    overrides = {"mqtt_url": args.mqtt, "smtp_url": args.smtp}
    settings = CloudSettings(
        database_url=url, **{k: v for k, v in overrides.items() if v is not None}
    )
    engine = _engine(url)
    try:
        _require_migrated(engine, url)
        bridge = _bridge(settings) if settings.mqtt_url else None
        app = _create_app(settings, engine, on_outbox=bridge.notify if bridge else None)
        return asyncio.run(
            _serve_all(app, settings, engine, bridge, host=args.host, port=args.port)
        )
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()


def _create_app(
    settings: CloudSettings, engine: Engine, *, on_outbox: Callable[[], None] | None
) -> FastAPI:
    try:
        from .api import create_app
    except ImportError as exc:
        raise CliError(f"the HTTP API (cloud.api) cannot be loaded: {exc}") from None
    return create_app(settings, engine=engine, on_outbox=on_outbox)


def _bridge(settings: CloudSettings) -> Any:
    """The MQTT bridge, or None (with a warning) when ``cloud.mqtt_bridge`` is unavailable."""
    try:
        from .mqtt_bridge import MqttBridge
    except ImportError as exc:
        print(
            f"{PROG}: warning: --mqtt given but the MQTT bridge cannot be loaded ({exc}); "
            "serving without MQTT: online doors wait for phones",
            file=sys.stderr,
        )
        return None
    return MqttBridge.from_settings(settings)


async def _serve_all(
    app: FastAPI, settings: CloudSettings, engine: Engine, bridge: Any, *, host: str, port: int
) -> int:
    import uvicorn

    _log_cloud_to_stderr()
    # Open console pages hold event streams: give them 5 s on Ctrl-C, then close them.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    backend = backend_from_url(settings.smtp_url, mail_from=settings.mail_from)
    sender = EmailSender(session_factory(engine), backend)
    tasks = [asyncio.create_task(sender.run(stop), name="email sender")]
    if bridge is not None:
        tasks.append(asyncio.create_task(bridge.run(), name="mqtt bridge"))
    for task in tasks:
        task.add_done_callback(lambda t: _stop_server_if_failed(t, server))
    mqtt = settings.mqtt_url if bridge is not None else "off"
    print(f"{PROG}: http://{host}:{port}  email: {backend!r}  mqtt: {mqtt}", flush=True)
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot start, e.g. the port is taken
        raise CliError(
            f"cannot serve on {host}:{port} (uvicorn's reason is logged above)"
        ) from None
    finally:
        stop.set()
        if bridge is not None:
            await bridge.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if server.started else 1


def _log_cloud_to_stderr() -> None:
    """The cloud's own log lines (email sender, MQTT bridge) next to uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-8s %(name)s: %(message)s"))
    cloud = logging.getLogger("cloud")
    cloud.addHandler(handler)
    cloud.setLevel(logging.INFO)


def _stop_server_if_failed(task: asyncio.Task[None], server: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"{PROG}: error: {task.get_name()} stopped: {task.exception()}", file=sys.stderr)
        server.should_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``door-cloud`` console script."""
    args = _parser().parse_args(argv)
    handlers = {
        "migrate": _migrate,
        "seed-demo": _seed_demo,
        "serve": _serve,
        "rotate-key": _rotate_key,
        "register-door": _register_door,
    }
    try:
        return handlers[args.command](args)
    except CliError as exc:
        message = str(exc)
    except (SQLAlchemyError, CommandError) as exc:
        message = _db_error(exc, _url(args))
    except OSError as exc:
        message = str(exc)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
