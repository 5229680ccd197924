"""`cellgate gateway`, `cellgate upgrade-db`, `cellgate init-admin`: run on the gateway host."""

from __future__ import annotations

import argparse
import os
import sys

from . import exitcodes


GATEWAY_FLAGS = {
    "ip": "interface to listen on (default 127.0.0.1)",
    "port": "port to listen on (default 8765, env CELLGATE_PORT)",
    "db-url": "store URL (default sqlite:///cellgate.db, env CELLGATE_DB_URL); PostgreSQL: postgresql+psycopg://…",
    "public-url": "URL users reach the gateway at, for links",
    "config": "config file (default cellgate_config.py, if present)",
    "log-level": "DEBUG, INFO, WARNING…",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="run the gateway (the control plane)",
                       description="Run the gateway. Every option can also be set as Gateway.<name> in cellgate_config.py.")
    for flag, helptext in GATEWAY_FLAGS.items():
        p.add_argument(f"--{flag}", help=helptext)
    p.set_defaults(func=run_gateway)

    p = sub.add_parser("upgrade-db", help="apply the store's migrations (back it up first)")
    p.add_argument("--db-url", default=os.environ.get("CELLGATE_DB_URL", "sqlite:///cellgate.db"))
    p.set_defaults(func=upgrade_db)

    p = sub.add_parser("init-admin", help="create an admin user and print a token for it (bootstrap, on the gateway host)")
    p.add_argument("name")
    p.add_argument("--db-url", default=os.environ.get("CELLGATE_DB_URL", "sqlite:///cellgate.db"))
    p.set_defaults(func=init_admin)


def run_gateway(args: argparse.Namespace) -> int:
    from traitlets import TraitError

    from ..gateway.app import Gateway
    from ..gateway.store import StoreError

    app = Gateway()
    argv = [f"--{flag}={getattr(args, flag.replace('-', '_'))}" for flag in GATEWAY_FLAGS
            if getattr(args, flag.replace("-", "_")) is not None]
    try:
        app.initialize(argv)
        app.start()
    except (StoreError, TraitError) as exc:
        print(f"cellgate gateway: {exc}", file=sys.stderr)
        return exitcodes.ERROR
    return exitcodes.OK


def upgrade_db(args: argparse.Namespace) -> int:
    from ..gateway.store import known_revision, make_engine, schema_state, upgrade

    engine = make_engine(args.db_url)
    before, head = schema_state(engine)
    if before is not None and not known_revision(engine, before):
        print(f"cellgate upgrade-db: the store is at schema revision {before}, which this cellgate does not know "
              f"(it knows up to {head}): it is newer than this cellgate; upgrade cellgate instead", file=sys.stderr)
        engine.dispose()
        return exitcodes.ERROR
    upgrade(engine)
    engine.dispose()
    print(f"store at revision {head} (was {before or 'empty'})")
    return exitcodes.OK


def init_admin(args: argparse.Namespace) -> int:
    from ..gateway import auth
    from ..gateway.store import Store

    store = Store(args.db_url)

    def _tx(session):  # type: ignore[no-untyped-def]
        user = auth.ensure_user(session, args.name, is_admin=True, actor="cli:init-admin")
        user.is_admin = True
        raw, _ = auth.new_token(session, "user", user=user, name="init-admin", actor="cli:init-admin")
        return raw

    print(store.call(_tx))
    store.close()
    return exitcodes.OK
