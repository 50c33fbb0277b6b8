"""The images built here: cached by their inputs, and each runs as a non-root user."""

from __future__ import annotations

import json
import tarfile

import pytest

from haven_localcluster.images import ensure_images

USERS = {"pause": "65535:65535", "coredns": "65532:65532", "recorder": "10001:10001",
         "operator": "10001:10001", "livekit": "65532:65532", "testkit": "10001:10001"}  # fmt: skip


def image_config(archive) -> dict:
    with tarfile.open(archive) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))
        assert manifest["RepoTags"], manifest
        return json.load(tar.extractfile(manifest["Config"]))["config"]


def test_a_second_build_finds_every_image_in_the_cache(images):
    again = ensure_images()
    assert {name: image.ref for name, image in again.items()} == {
        name: image.ref for name, image in images.items()
    }
    assert all(image.cached for image in again.values())


@pytest.mark.parametrize("name", sorted(USERS))
def test_the_image_runs_as_a_non_root_user(images, name):
    config = image_config(images[name].archive)
    assert config["User"] == USERS[name]
    if name in ("recorder", "operator", "testkit"):
        assert "PATH=/opt/venv/bin:" in " ".join(config["Env"])
    if name == "testkit":  # the publisher and the stand-in, by `python -m <module>`
        assert config["Entrypoint"] == ["python", "-m"]
        assert "PYTHONPATH=/opt/haven-testkit" in config["Env"]
