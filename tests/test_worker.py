"""The training worker: a job trained, exported and reported; racing workers; cancel; a killed worker."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from test_db_jobs import worker_sessions  # noqa: F401  (a new engine per call, as separate processes have)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from waiting import START_S, until

from db import jobs
from db.models import TrainingJob
from styles import catalog
from styles.archive import model_config, store_versions, write_archive
from styles.payload.networks import Int8Linear, ResnetGenerator
from training import cli, distributed, retrain
from training.trainer import Trainer
from training.worker import TrainingWorker, WorkerConfig

torch.set_num_threads(1)
Sessions = async_sessionmaker[AsyncSession]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def datasets(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A dataset root with the tiny dataset as the selfie2anime pair."""
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "selfie2anime").symlink_to(tiny_dataset)
    return root


def config(store: Path, datasets: Path, tmp_path: Path, worker_id: str, **more: object) -> WorkerConfig:
    return WorkerConfig(datasets=datasets, model_store=store, runs_dir=tmp_path / "runs",
                        heartbeat_every=2, threads=1, worker_id=worker_id, **more)  # type: ignore[arg-type]


async def add_job(sessions: Sessions, iterations: int, from_version: str | None = None) -> TrainingJob:
    async with sessions() as session:
        return await jobs.enqueue(
            session, pair="selfie2anime", iterations=iterations, from_version=from_version,
            requested_by="telegram:1", notify_platform="telegram", notify_chat_id="1",
        )


async def job_now(sessions: Sessions, job_id: int) -> TrainingJob:
    async with sessions() as session:
        job = await jobs.get_job(session, job_id=job_id)
    assert job is not None
    return job


async def wait_until(sessions: Sessions, job_id: int, ok: Callable[[TrainingJob], bool]) -> TrainingJob:
    """The job once `ok(job)`, for as long as a worker takes to get there on a loaded machine: `ok` also
    says when the worker has ended, so only a hung one waits the whole START_S."""
    job = await job_now(sessions, job_id)

    async def reached() -> bool:
        nonlocal job
        job = await job_now(sessions, job_id)
        return ok(job)

    await until(reached, f"job {job_id}'s state", every=0.1, within=START_S)
    return job


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_job_trains_exports_the_next_version_and_reports(
    worker_sessions: Callable[[], Sessions], tiny_store: Path, datasets: Path, tmp_path: Path
) -> None:
    sessions = worker_sessions()
    worker = TrainingWorker(sessions, config(tiny_store, datasets, tmp_path, "w1"))
    first = await add_job(sessions, iterations=3)
    second = await add_job(sessions, iterations=2, from_version="1.0")
    missing = await add_job(sessions, iterations=2, from_version="7.0")
    assert [await worker.run_once() for _ in range(4)] == [first.id, second.id, missing.id, None]

    done = await job_now(sessions, first.id)
    assert (done.status, done.progress) == ("done", 3)
    assert done.result is not None and done.result["versions"] == {"selfie2anime": "2.0", "anime2selfie": "2.0"}
    assert Path(done.result["samples"]).is_file()
    again = await job_now(sessions, second.id)
    assert again.status == "done" and again.result["versions"]["selfie2anime"] == "3.0"
    found = store_versions(tiny_store)
    assert sorted(found["selfie2anime"]) == sorted(found["anime2selfie"]) == ["1.0", "2.0", "3.0"]
    new = found["selfie2anime"]["2.0"].config
    assert new["handler"]["arch"] == found["selfie2anime"]["1.0"].config["handler"]["arch"]
    assert new["handler"]["title"] == "Selfie to anime"
    failed = await job_now(sessions, missing.id)
    assert failed.status == "failed" and "no selfie2anime 7.0" in (failed.error or "")


# The authors' full model as import-official writes it (TensorFlow graph, int8 first MLP layer), small.
FULL = {"input_nc": 3, "output_nc": 3, "ngf": 8, "n_blocks": 1, "img_size": 32, "light": False, "tf_compat": True}


def add_full_version(store: Path, version: str, arch: dict | None = None) -> None:
    """Both directions of the pair as `version`: a small full model stored as import-official stores it."""
    arch = arch or {**FULL, "fc0_weight": "int8"}
    for seed, style in enumerate(("selfie2anime", "anime2selfie")):
        torch.manual_seed(seed)
        weights = ResnetGenerator(**FULL).state_dict()
        weights["FC.0.weight"], weights["FC.0.scale"] = Int8Linear.quantize(weights["FC.0.weight"])
        config = model_config(arch, 32, catalog.entry(style), workers=1, batch_size=1, max_batch_delay=50,
                              response_timeout=120)
        write_archive(store, style, version, weights, config)


def test_retraining_from_an_imported_full_version_starts_from_that_network(
    tiny_store: Path, datasets: Path, tmp_path: Path
) -> None:
    """/retrain ... from 2.0 where 2.0 is full (the light 1.0 beside it): the trainer builds 2.0's network
    and starts from its weights, the int8 layer as the float32 one it stands for."""
    add_full_version(tiny_store, "2.0")
    plan = retrain.plan(pair="selfie2anime", iterations=2, from_version="2.0", datasets=datasets,
                        model_store=tiny_store, runs_dir=tmp_path / "runs", run_name="job-1", chunk=2)
    assert (plan.options.light, plan.options.tf_compat, plan.options.img_size) == (False, True, 32)
    trainer = Trainer(plan.options, distributed.setup(1))
    retrain.start_from_archives(trainer, plan)
    for key, archive in zip(("genA2B", "genB2A"), plan.templates):
        stored, trained = archive.generator_weights(), trainer.nets[key].state_dict()
        int8, scale = stored.pop("FC.0.weight"), stored.pop("FC.0.scale")
        assert torch.equal(trained.pop("FC.0.weight"), int8.float() * scale.float()[:, None])
        assert trained.keys() == stored.keys() and all(torch.equal(trained[k], stored[k]) for k in stored)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_job_from_a_full_version_exports_the_same_network_and_one_it_cannot_build_is_refused(
    worker_sessions: Callable[[], Sessions], tiny_store: Path, datasets: Path, tmp_path: Path
) -> None:
    add_full_version(tiny_store, "2.0")
    add_full_version(tiny_store, "3.0", {**FULL, "fc0_weight": "int8", "input_nc": 1})
    sessions = worker_sessions()
    worker = TrainingWorker(sessions, config(tiny_store, datasets, tmp_path, "w1"))
    full, odd = await add_job(sessions, iterations=2, from_version="2.0"), await add_job(sessions, 2, "3.0")
    assert [await worker.run_once() for _ in range(2)] == [full.id, odd.id]

    done = await job_now(sessions, full.id)
    assert done.status == "done", done.error
    assert done.result is not None and done.result["versions"] == {"selfie2anime": "4.0", "anime2selfie": "4.0"}
    found = store_versions(tiny_store)
    for style in ("selfie2anime", "anime2selfie"):
        new = found[style]["4.0"]
        assert new.handler["arch"] == found[style]["2.0"].handler["arch"]
        assert new.generator_weights()["FC.0.weight"].dtype == torch.int8
    refused = await job_now(sessions, odd.id)
    assert refused.status == "failed" and "selfie2anime 3.0 is a network the trainer cannot build (input_nc: 1)" in (
        refused.error or "")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_two_workers_race_for_one_job(
    worker_sessions: Callable[[], Sessions], tiny_store: Path, datasets: Path, tmp_path: Path
) -> None:
    job = await add_job(worker_sessions(), iterations=2)
    workers = [TrainingWorker(worker_sessions(), config(tiny_store, datasets, tmp_path, f"w{i}")) for i in range(2)]
    ran = await asyncio.gather(*(w.run_once() for w in workers))
    assert sorted(ran, key=str) == [job.id, None]
    assert (await job_now(worker_sessions(), job.id)).status == "done"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_cancelled_job_stops_and_says_why(
    worker_sessions: Callable[[], Sessions], tiny_store: Path, datasets: Path, tmp_path: Path
) -> None:
    sessions = worker_sessions()
    job = await add_job(sessions, iterations=10_000)
    worker = TrainingWorker(worker_sessions(), config(tiny_store, datasets, tmp_path, "w1"))
    running = asyncio.create_task(worker.run_once())
    await wait_until(sessions, job.id, lambda j: j.progress > 0 or running.done())
    assert not running.done(), running.result()  # raises what ended the worker before its first heartbeat
    async with sessions() as session:
        await jobs.cancel(session, job_id=job.id, reason="cancelled by telegram:1")
    assert await asyncio.wait_for(running, 60) == job.id
    stopped = await job_now(sessions, job.id)
    assert (stopped.status, stopped.error) == ("cancelled", "cancelled by telegram:1")
    assert stopped.progress < 10_000 and stopped.result is None
    assert sorted(store_versions(tiny_store)["selfie2anime"]) == ["1.0"]  # nothing exported


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_killed_worker_leaves_its_job_to_another(
    worker_sessions: Callable[[], Sessions], db_url: str, tiny_store: Path, datasets: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sessions = worker_sessions()
    job = await add_job(sessions, iterations=12)
    worker = subprocess.Popen(
        [sys.executable, "-m", "training", "worker", "--database-url", db_url, "--datasets", str(datasets),
         "--model-store", str(tiny_store), "--runs-dir", str(tmp_path / "runs"), "--heartbeat-every", "2",
         "--threads", "1", "--exit-when-idle", "--worker-id", "doomed"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        progressed = await wait_until(sessions, job.id, lambda j: j.progress >= 2 or worker.poll() is not None)
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert (progressed.status, progressed.worker_id) == ("running", "doomed")

    survivor = TrainingWorker(worker_sessions(), config(tiny_store, datasets, tmp_path, "survivor", stale_after_s=0.0))
    with caplog.at_level("INFO", logger="training.worker"):
        assert await survivor.run_once() == job.id  # requeues the dead worker's job, then claims it
    assert "resuming" in caplog.text  # from the dead worker's last checkpoint, not from scratch
    finished = await job_now(sessions, job.id)
    assert (finished.status, finished.progress, finished.worker_id) == ("done", 12, "survivor")
    assert finished.result is not None and finished.result["versions"]["selfie2anime"] == "2.0"
    async with sessions() as session:
        assert await jobs.reclaim_stale(session, older_than=timedelta(0)) == []


def test_enqueue_list_and_cancel_from_the_command_line(sqlite_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    def training(*args: str) -> tuple[int, str]:
        code = cli.main([*args, "--database-url", sqlite_db_url])
        return code, capsys.readouterr().out

    assert training("enqueue", "selfie2anime", "--iterations", "50", "--from", "1.0") == (
        0, "queued #1 selfie2anime queued 0/50 from 1.0\n"
    )
    assert training("enqueue", "cat2dog") == (0, "queued #2 cat2dog queued 0/10000\n")
    assert training("cancel", "2") == (0, "#2 cat2dog cancelled 0/10000 (cancelled by cli:" + getpass.getuser() + ")\n")
    assert training("jobs", "--status", "queued") == (0, "#1 selfie2anime queued 0/50 from 1.0\n")
    assert training("cancel", "9") == (1, "no job #9\n")
