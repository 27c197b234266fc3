"""`python -m serving`: stylize with either runtime, list styles, start/status/stop TorchServe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from torchserve_fixture import free_port_block, running_torchserve, wait_for_workers
from waiting import HANG_S, START_S

from media import gif_frames, make_gif, make_mp4, probe, screen_gif
from serving import inputs, torchserve
from styles.payload import framing
from serving.cli import NO_STYLES, SLOW_START, main
from serving.torchserve import LocalTorchServe

FIXTURES = Path(__file__).with_name("fixtures")
FACE, CAT = FIXTURES / "obama_256.jpg", FIXTURES / "chelsea_256.jpg"


def serving_cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHSERVE_", "MODEL_STORE"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "serving", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_stylize_with_the_embedded_engine(serving_model_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = serving_cli("--model-store", serving_model_store, "stylize", FACE, CAT,
                         "--style", "selfie2anime", "-o", out, "--size", "64", "--format", "png")
    assert result.returncode == 1  # the cat has no face; the portrait still comes out
    assert f"{CAT}: {framing.NO_FACE}" in result.stderr
    assert Image.open(out / "obama_256.selfie2anime.png").size == (64, 64)
    assert not (out / "chelsea_256.selfie2anime.png").exists()


def test_stylize_one_file_to_a_named_output(serving_model_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "dog.jpg"
    result = serving_cli("--model-store", serving_model_store, "stylize", CAT, "--style", "cat2dog", "-o", target)
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (64, 64)  # what the test store's cat2dog draws (32 px, exported at 2x)


def test_gifs_and_videos_come_back_in_kind_and_stills_can_compare(serving_model_store: Path, tmp_path: Path) -> None:
    gif, mp4 = tmp_path / "wave.gif", tmp_path / "me.mp4"
    gif.write_bytes(make_gif([100, 200, 100]))
    mp4.write_bytes(make_mp4(1.0, 10))
    out = tmp_path / "out"
    result = serving_cli("--model-store", serving_model_store, "stylize", gif, mp4, CAT,
                         "--style", "dog2cat", "-o", out, "--compare")
    assert result.returncode == 0, result.stderr
    assert gif_frames((out / "wave.dog2cat.gif").read_bytes()) == [100, 200, 100]
    assert probe((out / "me.dog2cat.mp4").read_bytes())["frames"] == 10
    assert Image.open(out / "chelsea_256.dog2cat.jpg").size == (128, 64)  # before and after


def test_styles_lists_the_store_and_explains_an_empty_one(serving_model_store: Path, tmp_path: Path) -> None:
    listed = serving_cli("--model-store", serving_model_store, "styles")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["anime2selfie", "cat2dog", "dog2cat", "selfie2anime"]
    (tmp_path / "empty").mkdir()
    for command in (["styles"], ["stylize", CAT, "--style", "cat2dog"]):
        empty = serving_cli("--model-store", tmp_path / "empty", *command)
        assert empty.returncode == 1
        assert NO_STYLES.format(store=tmp_path / "empty") in empty.stderr


def local(ts: LocalTorchServe) -> list[str | Path]:
    """The command line's options for `ts`."""
    return ["--model-store", ts.model_store, "--run-dir", ts.run_dir, "--port", str(ts.ports.inference)]


def cli_start(ts: LocalTorchServe) -> None:
    """`python -m serving start` for `ts` (within its own TORCHSERVE_START_TIMEOUT_S); a failure is a failed
    start, which `running_torchserve` retries on other ports (some other process may have taken one first)."""
    started = serving_cli(*local(ts), "start", timeout=START_S)
    if started.returncode != 0:
        raise RuntimeError(f"python -m serving start failed: {started.stderr}")


@pytest.mark.slow
def test_start_stylize_through_torchserve_status_stop(serving_model_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "dog2cat.mar").symlink_to(serving_model_store / "dog2cat.mar")
    with running_torchserve(store, tmp_path / "run", token_auth=True, consecutive=True, start=cli_start) as ts:
        assert set(ts.keys()) == {"inference", "management", "API"}  # token authorisation is on
        wait_for_workers(ts, "dog2cat", 1)
        assert serving_cli(*local(ts), "status").returncode == 0
        styles = serving_cli(*local(ts), "styles", "--torchserve", ts.inference_url)
        assert styles.returncode == 0 and styles.stdout.startswith("dog2cat"), styles.stderr
        result = serving_cli(*local(ts), "stylize", CAT, "--style", "dog2cat", "--torchserve", ts.inference_url,
                             "-o", tmp_path / "cat.webp", "--format", "webp", "--size", "40")
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "cat.webp").size == (40, 40)
        assert serving_cli(*local(ts), "stop").returncode == 0
        assert serving_cli(*local(ts), "status").returncode == 1


def test_start_waits_torchserve_start_timeout_s_then_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Java can take minutes on a loaded machine, so how long `start` waits is a setting; past it the user
    gets one line naming that setting and the log folder. Here no Java ever starts (the launcher does
    nothing), so only the deadline ends the wait."""
    monkeypatch.setenv("TORCHSERVE_START_TIMEOUT_S", "0.5")
    monkeypatch.setattr(torchserve, "START", "pass")
    run_dir = tmp_path / "run"
    began = time.monotonic()
    assert main(["--model-store", str(tmp_path), "--run-dir", str(run_dir), "--port", str(free_port_block(5)),
                 "start"]) == 1
    assert time.monotonic() - began < HANG_S  # the setting's 0.5 s, not the default's minutes
    assert capsys.readouterr().err == f"error: {SLOW_START.format(timeout=0.5, logs=run_dir / 'logs')}\n"


def test_a_start_that_fails_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TorchServe's launcher failing (here it exits 3 at once) is the user's one line naming where to look,
    not a traceback."""
    monkeypatch.setattr(torchserve, "START", "raise SystemExit(3)")
    run_dir = tmp_path / "run"
    assert main(["--model-store", str(tmp_path), "--run-dir", str(run_dir), "--port", str(free_port_block(5)),
                 "start"]) == 1
    assert capsys.readouterr().err == f"error: torchserve --start failed; see {run_dir / 'torchserve.out'}\n"


def test_out_ending_in_a_slash_is_a_folder_even_for_one_input(serving_model_store: Path, tmp_path: Path) -> None:
    result = serving_cli("--model-store", serving_model_store, "stylize", CAT, "--style", "cat2dog",
                         "-o", f"{tmp_path / 'new' / 'folder'}/", "--size", "32")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "new" / "folder" / "chelsea_256.cat2dog.jpg").size == (32, 32)


def test_every_failure_is_one_line_and_a_non_zero_exit(serving_model_store: Path, tmp_path: Path) -> None:
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a folder")
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    store = ["--model-store", serving_model_store]
    cases = [
        ([*store, "stylize", CAT, "--style", "cat2dog", "-o", in_the_way / "x.jpg"],
         f"error: cannot write into {in_the_way}: a file is in the way"),
        ([*store, "stylize", CAT, FACE, "--style", "cat2dog", "-o", in_the_way / "sub"],
         f"error: cannot write into {in_the_way / 'sub'}: a file is in the way"),
        ([*store, "stylize", CAT, "--style", "cat2dog", "--torchserve", dead],
         "error: The picture service is not reachable right now. Please try again later."),
        ([*store, "styles", "--torchserve", dead], "The picture service is not reachable right now. Please try again later."),
    ]
    for args, line in cases:
        result = serving_cli(*args)
        assert (result.returncode, result.stderr) == (1, line + "\n"), args


def test_hostile_and_heic_files_get_one_line_and_the_next_file_is_drawn(serving_model_store: Path, tmp_path: Path) -> None:
    bomb, photo = tmp_path / "bomb.gif", tmp_path / "cat.heic"
    bomb.write_bytes(screen_gif(65535, 65535, 2))  # 85 bytes past Pillow's own pixel limit
    Image.open(CAT).save(photo, "HEIF")  # an iPhone's photo: a picture, not a one-frame video
    out = tmp_path / "out"
    result = serving_cli("--model-store", serving_model_store, "stylize", bomb, photo, "--style", "cat2dog", "-o", out)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"{bomb}: " + inputs.frame_too_large(65535, 65535, inputs.Limits()).message]
    assert Image.open(out / "cat.cat2dog.jpg").size == (64, 64)
