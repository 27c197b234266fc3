"""A bot container's entrypoint: `python start_bot.py telegram|discord`.

TorchServe 0.12 cannot be given fixed keys: it makes new ones at every start
and writes them to `key_file.json` in the volume it shares with the bots, so
the keys are read from there into the environment the bot reads. A bot whose
token is unset exits 0 at once: `docker compose up` starts the ones set in `.env`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bots.run import FRONT_ENDS
from config import Settings
from serving.torchserve import LocalTorchServe

KEY_DIR = Path("/run/torchserve")  # TorchServe's working folder, the torchserve-keys volume
KEY_VARIABLES = {"inference": "TORCHSERVE_TOKEN", "management": "TORCHSERVE_MANAGEMENT_TOKEN"}


def load_keys(key_dir: Path) -> None:
    """Put TorchServe's inference and management keys into the environment, unless set by hand."""
    keys = LocalTorchServe(run_dir=key_dir, model_store=key_dir).keys()
    for kind, variable in KEY_VARIABLES.items():
        if kind in keys and not os.environ.get(variable):  # a key set by hand (another TorchServe) wins
            os.environ[variable] = keys[kind]


def main(argv: list[str]) -> int:
    """Exec `python -m bots NAME` with the keys, or say why the bot stays off."""
    front_end = FRONT_ENDS[argv[0]]
    load_keys(KEY_DIR)
    if not front_end.configured(Settings(_env_file=None)):
        print(f"{front_end.missing} is not set: the {argv[0]} bot stays off.", file=sys.stderr)
        return 0
    os.execvp(sys.executable, [sys.executable, "-m", "bots", argv[0]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
