"""`cellgate gateway`, `cellgate upgrade-db`, `cellgate init-admin`: run on the gateway host."""

from __future__ import annotations

import argparse
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

    store_flags = {flag: GATEWAY_FLAGS[flag] for flag in ("db-url", "config")}
    p = sub.add_parser("upgrade-db", help="apply the store's migrations (back it up first)",
                       description="Migrate the store the gateway uses: the same --db-url, CELLGATE_DB_URL "
                                   "and cellgate_config.py (c.Gateway.db_url) as `cellgate gateway`.")
    for flag, helptext in store_flags.items():
        p.add_argument(f"--{flag}", help=helptext)
    p.set_defaults(func=upgrade_db)

    p = sub.add_parser("init-admin", help="create an admin user and print a token for it (bootstrap, on the gateway host)",
                       description="Create an admin in the store the gateway uses (configured as for `cellgate gateway`).")
    p.add_argument("name")
    for flag, helptext in store_flags.items():
        p.add_argument(f"--{flag}", help=helptext)
    p.set_defaults(func=init_admin)


def configured_gateway(args: argparse.Namespace, flags: dict[str, str]) -> object:
    """A ``Gateway`` configured exactly as ``cellgate gateway`` would be: its flags among ``flags``,
    then the config file, then the environment defaults (flags win). Raises ``TraitError``."""
    from ..gateway.app import Gateway

    app = Gateway()
    app.configure({Gateway.aliases[flag].split(".", 1)[1]: getattr(args, flag.replace("-", "_")) for flag in flags
                   if getattr(args, flag.replace("-", "_"), None) is not None})
    return app


def _store_url(args: argparse.Namespace, command: str) -> str | None:
    from traitlets import TraitError

    try:
        return str(configured_gateway(args, GATEWAY_FLAGS).db_url)  # type: ignore[attr-defined]
    except TraitError as exc:
        print(f"cellgate {command}: {exc}", file=sys.stderr)
        return None


def run_gateway(args: argparse.Namespace) -> int:
    from traitlets import TraitError

    from ..gateway.app import Gateway
    from ..gateway.store import StoreError

    try:
        app = configured_gateway(args, GATEWAY_FLAGS)
        assert isinstance(app, Gateway)
        app.start()
    except (StoreError, TraitError) as exc:
        print(f"cellgate gateway: {exc}", file=sys.stderr)
        return exitcodes.ERROR
    return exitcodes.OK


def upgrade_db(args: argparse.Namespace) -> int:
    from ..gateway.store import known_revision, make_engine, schema_state, upgrade

    url = _store_url(args, "upgrade-db")
    if url is None:
        return exitcodes.ERROR
    engine = make_engine(url)
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

    url = _store_url(args, "init-admin")
    if url is None:
        return exitcodes.ERROR
    store = Store(url)

    def _tx(session):  # type: ignore[no-untyped-def]
        user = auth.ensure_user(session, args.name, is_admin=True, actor="cli:init-admin")
        user.is_admin = True
        raw, _ = auth.new_token(session, "user", user=user, name="init-admin", actor="cli:init-admin")
        return raw

    print(store.call(_tx))
    store.close()
    return exitcodes.OK
