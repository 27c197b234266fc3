"""A local TorchServe over a model store: start, stop, status, keys.

Each instance gets its own run folder holding its config, `key_file.json`,
logs and temp folder (TorchServe keeps its pid file in `$TMPDIR`), so
several instances (tests, a developer's) never step on each other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path

import psutil

from styles.archive import store_versions, version_order

CONFIG_TEMPLATE = Path(__file__).with_name("config.properties")
START = "from ts.model_server import start; start()"


@dataclass(frozen=True)
class Ports:
    """TorchServe's five listening ports; two instances must share none (gRPC included)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 8083
    grpc_management: int = 8084

    @classmethod
    def from_base(cls, port: int) -> Ports:
        """Five consecutive ports from the inference port (the client expects management at +1)."""
        return cls(*range(port, port + 5))


@dataclass(frozen=True)
class LocalTorchServe:
    """One TorchServe instance, described by where it runs and what it serves."""

    run_dir: Path
    model_store: Path
    ports: Ports = Ports()
    token_auth: bool = True

    def __post_init__(self) -> None:
        # Java runs inside run_dir: a relative path handed to it (its temp folder, the
        # model store) would point somewhere else, so both are made absolute here.
        object.__setattr__(self, "run_dir", Path(self.run_dir).resolve())
        object.__setattr__(self, "model_store", Path(self.model_store).resolve())

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def tmp_dir(self) -> Path:
        return self.run_dir / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.tmp_dir / ".model_server.pid"

    def keys(self) -> dict[str, str]:
        """{"inference", "management", "API"} -> key, from key_file.json ({} without token auth)."""
        try:
            data = json.loads((self.run_dir / "key_file.json").read_text())
        except (OSError, ValueError):
            return {}
        return {kind: entry["key"] for kind, entry in data.items()}

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TMPDIR=str(self.tmp_dir), TEMP=str(self.tmp_dir), TMP=str(self.tmp_dir),
            LOG_LOCATION=str(self.run_dir / "logs"), METRICS_LOCATION=str(self.run_dir / "logs"),
        )
        return env

    def write_config(self, defaults: Mapping[str, str] | None = None) -> Path:
        """The template plus this instance's absolute model store, ports and the archives to load, each
        style's default first (`load_models`)."""
        store = self.model_store
        lines = [
            CONFIG_TEMPLATE.read_text(),
            "# Added by serving.torchserve for this instance:",
            f"model_store={store}",
            f"allowed_urls=file://{store}/.*",
            f"inference_address={self.inference_url}",
            f"management_address={self.management_url}",
            f"metrics_address=http://127.0.0.1:{self.ports.metrics}",
            f"grpc_inference_port={self.ports.grpc_inference}",
            f"grpc_management_port={self.ports.grpc_management}",
            f"load_models={','.join(load_order(store, defaults or {})) or 'all'}",
        ]
        path = self.run_dir / "config.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _torchserve(self, *args: str) -> int:
        """Run the `torchserve` launcher; Java inherits its output, so that goes to a file, not a pipe."""
        with (self.run_dir / "torchserve.out").open("ab") as out:
            return subprocess.run(
                [sys.executable, "-c", START, *args], cwd=self.run_dir, env=self._env(),
                stdout=out, stderr=subprocess.STDOUT, timeout=60,
            ).returncode

    def start(self, timeout: float, defaults: Mapping[str, str] | None = None) -> None:
        """Start Java in the background serving `defaults` ({style: version}; the shipped version of a style
        not in it) as each style's default; wait until /ping answers and the management API listens, for
        `timeout` seconds (TORCHSERVE_START_TIMEOUT_S for a person's start: no default here, so there is one)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "key_file.json").unlink(missing_ok=True)
        args = ["--start", "--ncs", "--ts-config", str(self.write_config(defaults)),
                "--model-store", str(self.model_store)]
        if not self.token_auth:
            args.append("--disable-token-auth")
        if self._torchserve(*args) != 0:
            raise RuntimeError(f"torchserve --start failed; see {self.run_dir / 'torchserve.out'}")
        deadline = time.monotonic() + timeout
        java = self._java()
        while not (self.healthy() and port_in_use(self.ports.management)):
            if java is not None and not java.is_running():
                raise RuntimeError(f"TorchServe stopped while starting (a port taken?); see {self.run_dir / 'logs'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"TorchServe did not answer within {timeout:.0f} s; see {self.run_dir / 'logs'}")
            time.sleep(0.5)

    def _java(self) -> psutil.Process | None:
        """The Java process of this instance, from its pid file (None before it is written or after it went)."""
        try:
            return psutil.Process(int(self.pid_file.read_text()))
        except (OSError, ValueError, psutil.Error):
            return None

    def owns_its_ports(self) -> bool:
        """True when this instance's Java listens on its HTTP ports itself (gRPC's bind later).

        Ports found free a moment before Java starts can be taken by another
        process in between; then /ping may be answered by someone else's server.
        """
        java = self._java()
        try:
            listening = {c.laddr.port for c in java.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (AttributeError, psutil.Error):
            return False
        return {self.ports.inference, self.ports.management, self.ports.metrics} <= listening

    def healthy(self) -> bool:
        """True when the inference API's /ping says Healthy."""
        request = urllib.request.Request(f"{self.inference_url}/ping")
        if key := self.keys().get("inference"):
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return b"Healthy" in resp.read()
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Java and wait until it has exited, freeing its ports (it exits seconds after --stop)."""
        java = self._java()
        if self.pid_file.exists():
            self._torchserve("--stop")
        if java is None:
            return
        try:
            java.wait(timeout)
        except psutil.TimeoutExpired:
            raise TimeoutError(f"TorchServe (pid {java.pid}) still runs {timeout:.0f} s after --stop") from None


def load_order(store: Path, defaults: Mapping[str, str]) -> list[str]:
    """The store's archives as `load_models` lists them: each style's default first, then its other versions.

    TorchServe makes the first-listed version of a model its default (with `load_models=all`, whichever
    the folder listing gives first: a restart once served a 2.0 nobody deployed). A style's default is
    `defaults[style]`, else the version that shipped (`styles.archive.scan`).
    """
    first, rest = [], []
    for style, versions in sorted(store_versions(store).items()):
        wanted = defaults.get(style)
        default = wanted if wanted in versions else min(versions, key=version_order)
        for version in sorted(versions, key=version_order):
            (first if version == default else rest).append(versions[version].path.name)
    return first + rest


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
