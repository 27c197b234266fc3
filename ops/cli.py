"""`python -m ops deploy | rollback | models | start`: /deploy, /rollback and /models, and TorchServe's start.

With `--torchserve URL` (or `TORCHSERVE_URL`; tokens `TORCHSERVE_TOKEN` and
`TORCHSERVE_MANAGEMENT_TOKEN`, else the local instance's key file) the change
is made on that TorchServe at once. Without, the version is loaded and checked
in this process and logged as the default; running bots on the embedded engine
adopt the logged defaults when they next start (use /deploy in chat to switch
a running bot at once). `python -m ops start` starts the local TorchServe
with each style's live version (the deployment log's, else the shipped one)
as its default. Both build their runtime as the bots do
(`serving.factory.open_stylizer`, `ops.management.open_management`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from db.engine import create_engine, migrate, session_factory
from ops.deploy import Deployer, describe_models, live_versions
from ops.management import DeployError, open_management
from serving.api import StylizeError
from serving.cli import add_local_options, configured, run_reporting, start_local
from serving.factory import open_stylizer
from serving.torchserve import LocalTorchServe, Ports


async def _start(args: argparse.Namespace) -> int:
    """Start the local TorchServe with each style's live version as its default."""
    settings = configured(args)
    await migrate(settings.database_url)
    db = create_engine(settings.database_url)
    try:
        live = await live_versions(session_factory(db), settings.model_store)
    finally:
        await db.dispose()
    ts = LocalTorchServe(args.run_dir, settings.model_store, Ports.from_base(args.port))
    if ts.healthy():
        print(f"TorchServe already answers at {ts.inference_url}: `python -m serving stop` first to restart it")
        return 1
    await asyncio.to_thread(start_local, ts, settings, live)
    serving = ", ".join(f"{style} {version}" for style, version in sorted(live.items()))
    print(f"TorchServe: inference {ts.inference_url}, serving {serving}")
    return 0


async def _run(args: argparse.Namespace) -> int:
    if args.command == "start":
        return await _start(args)
    settings = configured(args)
    await migrate(settings.database_url)
    db = create_engine(settings.database_url)
    stylizer = open_stylizer(settings)
    management = open_management(settings, stylizer)
    deployer = Deployer(management, session_factory(db), settings.model_store)
    by = f"cli:{getpass.getuser()}"
    try:
        await deployer.restore()  # the logged defaults, as a bot starting now would serve
        if args.command == "models":
            print("\n".join(describe_models(await deployer.models())))
            return 0
        if args.command == "deploy":
            outcome = await deployer.deploy(args.style, args.version, by=by, force=args.force)
        else:
            outcome = await deployer.rollback(args.style, by=by)
        print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
        return 0 if outcome.ok else 1
    except DeployError as error:
        print(error.message, file=sys.stderr)
        return 1
    finally:
        await management.close()
        await stylizer.close()
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
    deploy.add_argument("--force", action="store_true", help="deploy even if it measures worse than the live version")
    rollback = sub.add_parser("rollback", help="make the previously deployed version the default again")
    rollback.add_argument("style")
    models = sub.add_parser("models", help="each style's versions, default and deployments")
    sub.add_parser("start", help="start the local TorchServe serving each style's deployed version (the log's)")
    for p in (deploy, rollback, models):
        p.add_argument("--torchserve", metavar="URL", help="TorchServe inference URL (default: $TORCHSERVE_URL, else embedded)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; every failure is one line on stderr."""
    args = build_parser().parse_args(argv)
    return run_reporting(args, lambda: asyncio.run(_run(args)), DeployError, StylizeError)
