"""`python -m ops deploy | rollback | models`: what /deploy, /rollback and /models do in chat.

With `--torchserve URL` (or `TORCHSERVE_URL`) the change is made on that
TorchServe at once. Without, the version is loaded and checked in this
process and logged as the default; running bots on the embedded engine adopt
the logged defaults when they next start (use /deploy in chat to switch a
running bot at once).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence

from db.engine import create_engine, default_url, migrate, session_factory
from ops.deploy import Deployer, describe_models
from ops.management import DeployError, EmbeddedManagement, Management, TorchServeManagement
from serving.api import StylizeError
from serving.cli import add_local_options, run_reporting
from serving.client import default_management_url
from serving.engine import EmbeddedEngine
from serving.torchserve import LocalTorchServe, Ports


def _management(args: argparse.Namespace) -> tuple[Management, EmbeddedEngine | None]:
    """TorchServe's APIs when a URL is given (keys: env, else the local instance's), else an engine."""
    url = args.torchserve or os.environ.get("TORCHSERVE_URL")
    if not url:
        engine = EmbeddedEngine(args.model_store)
        return EmbeddedManagement(engine), engine
    keys = LocalTorchServe(args.run_dir, args.model_store, Ports.from_base(args.port)).keys()
    return TorchServeManagement(
        url, os.environ.get("TORCHSERVE_MANAGEMENT_URL") or default_management_url(url),
        token=os.environ.get("TORCHSERVE_TOKEN") or keys.get("inference"),
        management_token=os.environ.get("TORCHSERVE_MANAGEMENT_TOKEN") or keys.get("management"),
    ), None


async def _run(args: argparse.Namespace) -> int:
    database_url = os.environ.get("DATABASE_URL") or default_url()
    await migrate(database_url)
    db = create_engine(database_url)
    management, engine = _management(args)
    deployer = Deployer(management, session_factory(db), args.model_store)
    by = f"cli:{getpass.getuser()}"
    try:
        await deployer.restore()  # the logged defaults, as a bot starting now would serve
        if args.command == "models":
            print("\n".join(describe_models(await deployer.models())))
            return 0
        if args.command == "deploy":
            outcome = await deployer.deploy(args.style, args.version, by=by)
        else:
            outcome = await deployer.rollback(args.style, by=by)
        print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
        return 0 if outcome.ok else 1
    except DeployError as error:
        print(error.message, file=sys.stderr)
        return 1
    finally:
        await management.close()
        if engine is not None:
            await engine.close()
        await db.dispose()


def build_parser() -> argparse.ArgumentParser:
    """The operations command line."""
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_local_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    deploy = sub.add_parser("deploy", help="make a model-store version a style's default")
    deploy.add_argument("style")
    deploy.add_argument("version")
    rollback = sub.add_parser("rollback", help="make the previously deployed version the default again")
    rollback.add_argument("style")
    models = sub.add_parser("models", help="each style's versions, default and deployments")
    for p in (deploy, rollback, models):
        p.add_argument("--torchserve", metavar="URL", help="TorchServe inference URL (default: $TORCHSERVE_URL, else embedded)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; every failure is one line on stderr."""
    args = build_parser().parse_args(argv)
    return run_reporting(args, lambda: asyncio.run(_run(args)), DeployError, StylizeError)
