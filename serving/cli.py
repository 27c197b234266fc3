"""`python -m serving start | stop | status | styles | stylize`.

start/stop/status run a local TorchServe over the model store; styles and
stylize use the embedded engine unless `--torchserve URL` (or
`TORCHSERVE_URL`) points at a running TorchServe (token: `TORCHSERVE_TOKEN`,
else the local instance's key file). Settings come from the environment or
`.env` (`config.Settings`); the flags override them.

Every failure ends in one line on stderr and a non-zero exit (`-v` shows the log too).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

from config import Settings, get_settings
from serving import animation
from serving.api import Stylized, Stylizer, StylizeError, Unavailable
from serving.factory import open_stylizer
from serving.torchserve import LocalTorchServe, Ports

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
NO_STYLES = "No styles in {store}/: export one with `python -m training export CKPT --out {store}`."
SLOW_START = ("TorchServe did not answer within {timeout:g} s and was stopped: raise TORCHSERVE_START_TIMEOUT_S "
              "(a loaded machine starts Java slowly), or see why in {logs}")


def configured(args: argparse.Namespace) -> Settings:
    """The settings with this command line's overrides: `--model-store`, `--torchserve`, and the
    local TorchServe's keys (its run folder's key file) for tokens the settings leave unset."""
    settings = get_settings()
    update: dict[str, object] = {"model_store": args.model_store or settings.model_store}
    url = getattr(args, "torchserve", None) or settings.torchserve_url
    if url:
        keys = _local(args).keys()
        update["torchserve_url"] = url
        for field, kind in (("torchserve_token", "inference"), ("torchserve_management_token", "management")):
            if getattr(settings, field) is None and kind in keys:
                update[field] = SecretStr(keys[kind])
    return settings.model_copy(update=update)


def _local(args: argparse.Namespace) -> LocalTorchServe:
    return LocalTorchServe(args.run_dir, args.model_store or get_settings().model_store, Ports.from_base(args.port))


def start_local(ts: LocalTorchServe, settings: Settings, defaults: Mapping[str, str] | None = None) -> None:
    """`ts.start` within TORCHSERVE_START_TIMEOUT_S. A Java still starting past it is stopped, so that the
    next `start`, given longer, finds its ports free; the user is told which setting to raise."""
    try:
        ts.start(settings.torchserve_start_timeout_s, defaults)
    except TimeoutError:
        ts.stop()
        raise TimeoutError(SLOW_START.format(timeout=settings.torchserve_start_timeout_s,
                                             logs=ts.run_dir / "logs")) from None
    except RuntimeError as err:  # Java exited while starting; its message says where to look
        raise ChildProcessError(str(err)) from None  # an OSError: one line, as every command's failures


def start(args: argparse.Namespace) -> int:
    """Start TorchServe in the background and print where its keys are."""
    ts = _local(args)
    if ts.healthy():
        print(f"TorchServe already answers at {ts.inference_url}")
        return 0
    start_local(ts, get_settings())
    print(f"TorchServe: inference {ts.inference_url}, management {ts.management_url}")
    print("each style's shipped version is its default; `python -m ops start` serves the deployed ones instead")
    print(f"keys: {ts.run_dir / 'key_file.json'}; logs: {ts.run_dir / 'logs'}")
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop the local TorchServe."""
    _local(args).stop()
    print("TorchServe stopped")
    return 0


def status(args: argparse.Namespace) -> int:
    """Say whether the local TorchServe answers; exit 1 when it does not."""
    ts = _local(args)
    if ts.healthy():
        print(f"TorchServe is running at {ts.inference_url}")
        return 0
    print("TorchServe is not running")
    return 1


def _stylizer(settings: Settings) -> Stylizer:
    """The embedded engine, or a TorchServe client when a URL is set."""
    # A one-off run compiles nothing: it uses a faster path only when one is cached on disk.
    # (An environment variable, as the handler reads it inside TorchServe too.)
    os.environ.setdefault("TOONBOT_COMPILE", "cached")
    return open_stylizer(settings)


async def _styles(args: argparse.Namespace) -> int:
    settings = configured(args)
    stylizer = _stylizer(settings)
    try:
        found = await stylizer.styles()
    except StylizeError as err:
        print(err.message, file=sys.stderr)
        return 1
    finally:
        await stylizer.close()
    if not found:
        print(NO_STYLES.format(store=settings.model_store), file=sys.stderr)
        return 1
    for s in found:
        face = "  (needs a face)" if s.needs_face else ""
        print(f"{s.name:16} {s.version:6} {s.title}: {s.description}{face}")
    return 0


def output_path(source: Path, out: str | None, style: str, extension: str, many: bool) -> Path:
    """Where one result goes: inside OUT when it is a folder (several inputs, an existing folder,
    or a name ending in "/"), else OUT itself; beside the input without OUT."""
    name = f"{source.stem}.{style}.{extension}"
    if out is None:
        return source.with_name(name)
    if many or out.endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / name
    return Path(out)


def _make_folder(folder: Path) -> str | None:
    """Create `folder` and its parents; None when done, else why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return f"cannot write into {folder}: a file is in the way"
    except OSError as err:
        return f"cannot write into {folder}: {err.strerror or err}"
    return None


async def _stylize(args: argparse.Namespace) -> int:
    many = len(args.inputs) > 1
    if args.out is not None:  # every result goes into one folder: make sure it can be written first
        problem = _make_folder(output_path(args.inputs[0], args.out, args.style, "", many).parent)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    settings = configured(args)
    stylizer = _stylizer(settings)
    failed = 0
    try:
        if not await stylizer.styles():
            print(NO_STYLES.format(store=settings.model_store), file=sys.stderr)
            return 1
        for source in args.inputs:
            try:
                result, extension = await _draw(stylizer, settings, args, source.read_bytes())
            except Unavailable:
                raise  # the same for every input: said once, by main
            except (OSError, StylizeError) as err:
                failed += 1
                print(f"{source}: {getattr(err, 'message', None) or err}", file=sys.stderr)
                continue
            target = output_path(source, args.out, args.style, extension, many)
            try:
                target.write_bytes(result.image)
            except OSError as err:
                failed += 1
                print(f"{source}: cannot write {target}: {err.strerror or err}", file=sys.stderr)
                continue
            print(f"{source} -> {target} ({args.style} {result.version})")
    finally:
        await stylizer.close()
    return 1 if failed else 0


async def _draw(stylizer: Stylizer, settings: Settings, args: argparse.Namespace, data: bytes) -> tuple[Stylized, str]:
    """One input drawn, and the extension its result gets: an animated GIF or an MP4 frame by
    frame, back in its own format (within the ANIMATION_MAX_* settings); a still image as asked."""
    kind = animation.sniff(data)
    if kind is None:
        result = await stylizer.stylize(args.style, data, size=args.size, fmt=args.format, compare=args.compare)
        return result, EXTENSIONS[args.format]
    limits = animation.Limits.of(settings)
    clip = await asyncio.to_thread(animation.decode, data, limits)
    return await animation.draw(stylizer, args.style, clip, size=args.size), kind


def build_parser() -> argparse.ArgumentParser:
    """The serving command line."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_local_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start a local TorchServe").set_defaults(func=start)
    sub.add_parser("stop", help="stop it").set_defaults(func=stop)
    sub.add_parser("status", help="is it running?").set_defaults(func=status)
    for name, func, help_text in (("styles", _styles, "list the styles"), ("stylize", _stylize, "stylize pictures")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--torchserve", metavar="URL", help="TorchServe inference URL (default: $TORCHSERVE_URL, else embedded)")
        p.set_defaults(func=lambda args, f=func: asyncio.run(f(args)))
        if name == "stylize":
            p.add_argument("inputs", nargs="+", type=Path, metavar="IN")
            p.add_argument("--style", required=True)
            p.add_argument("-o", "--out", metavar="OUT",
                           help="output file (one input) or folder (several inputs, or a name ending in /)")
            p.add_argument("--size", type=int, default=None,
                           help="output side in pixels (default: the size the style draws at)")
            p.add_argument("--format", choices=sorted(EXTENSIONS), default="jpeg",
                           help="for still images; an animated GIF or an MP4 comes back as one")
            p.add_argument("--compare", action="store_true",
                           help="the original beside the result in one picture (still images)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    args = build_parser().parse_args(argv)
    return run_reporting(args, lambda: args.func(args), StylizeError)


def add_local_options(parser: argparse.ArgumentParser) -> None:
    """The model store, the local TorchServe (run folder with its keys, ports) and -v: every command line's."""
    parser.add_argument("--model-store", type=Path, default=None,
                        help="default: $MODEL_STORE, else model_store/ in the repository")
    parser.add_argument("--run-dir", type=Path, default=Path(".cache/torchserve"),
                        help="local TorchServe's config, keys and logs (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080,
                        help="local TorchServe's inference port; management, metrics and gRPC follow (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the log as well")


def run_reporting(args: argparse.Namespace, command: Callable[[], int | None], *expected: type[Exception]) -> int:
    """Run a command; an `expected` failure (its `message`), an OS error or Ctrl-C ends in one line on stderr."""
    # The runtimes log what they retry and why; the user gets the one line below instead.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except expected as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
    except OSError as err:
        print(f"error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
    return 1
