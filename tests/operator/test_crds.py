"""The CRDs on a real apiserver: schemas, defaults, CEL rules, printer columns, short names."""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import CRDS

MINT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"


def livestream(name: str, source: dict, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "streams.haven.dev/v1alpha1",
            "kind": "LiveStream",
            "metadata": {"name": name},
            "spec": {"source": source, **spec},
        }
    )


def recording(name: str, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "streams.haven.dev/v1alpha1",
            "kind": "Recording",
            "metadata": {"name": name},
            "spec": {"liveStreamRef": {"name": "s"}, **spec},
        }
    )


PUMPFUN = {"pumpfun": {"mintId": MINT}}
LIVEKIT = {"livekit": {"url": "ws://lk:7880", "room": "r", "credentialsSecretRef": {"name": "lk"}}}


def test_valid_objects_get_their_defaults(crds, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=livestream("a", PUMPFUN))
    kubectl("apply", "-n", namespace, "-f", "-", input=livestream("b", LIVEKIT))
    a = json.loads(kubectl("get", "-n", namespace, "ls", "a", "-o", "json").stdout)["spec"]
    assert "apiURL" not in a["source"]["pumpfun"]  # the operator's own default applies
    assert a["viewer"] == {
        "maxViewers": 100,
        "maxFps": 15,
        "maxWidth": 1280,
        "jpegQuality": 75,
        "audio": True,
        "hls": False,
    }
    assert a["storage"] == {"size": "10Gi", "reclaimPolicy": "Retain"} and a["suspend"] is False
    b = json.loads(kubectl("get", "-n", namespace, "livestream", "b", "-o", "json").stdout)["spec"]
    assert b["source"]["livekit"]["credentialsSecretRef"] == {
        "name": "lk", "apiKeyKey": "apiKey", "apiSecretKey": "apiSecret"
    }  # fmt: skip
    kubectl("apply", "-n", namespace, "-f", "-", input=recording("r"))
    r = json.loads(kubectl("get", "-n", namespace, "rec", "r", "-o", "json").stdout)["spec"]
    assert r == {
        "liveStreamRef": {"name": "s"},
        "format": "av1",
        "quality": "medium",
        "audio": True,
        "stopped": False,
    }


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (livestream("x", {"pumpfun": {"mintId": "short"}}), ["spec.source.pumpfun.mintId", "32"]),
        (
            livestream("x", {"pumpfun": {"mintId": "0" * 44}}),
            ["spec.source.pumpfun.mintId", "should match"],
        ),
        (
            livestream("x", {**PUMPFUN, **LIVEKIT}),
            ["spec.source", "exactly one of pumpfun or livekit"],
        ),
        (livestream("x", {}), ["spec.source", "exactly one of pumpfun or livekit"]),
        (
            livestream("x", {"livekit": {**LIVEKIT["livekit"], "url": "http://lk"}}),
            ["spec.source.livekit.url"],
        ),
        (livestream("x", PUMPFUN, viewer={"maxFps": 0}), ["spec.viewer.maxFps"]),
        (
            livestream("x", PUMPFUN, storage={"reclaimPolicy": "Keep"}),
            ["spec.storage.reclaimPolicy"],
        ),
        (recording("x", format="mpeg2"), ["spec.format", "av1", "h264", "vp9"]),
        (recording("x", quality="ultra"), ["spec.quality"]),
        (recording("x", container="avi"), ["spec.container", "mpegts"]),
        (recording("x", container="mpegts"), ["h264 is written as mp4 (the default) or mpegts"]),
        (recording("x", format="vp9", container="mp4"), ["av1 and vp9 as webm"]),
        (recording("x", maxDuration="two hours"), ["spec.maxDuration"]),
        (livestream("1cam", PUMPFUN), ["DNS-1035 label"]),
        (livestream("c" * 53, PUMPFUN), ["at most 52 characters", "-recordings"]),
        (recording("r" * 64), ["at most 63 characters"]),
    ],
)
def test_invalid_manifests_are_rejected_naming_the_field(crds, kubectl, namespace, manifest, words):
    result = kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr


def test_immutable_fields_and_one_way_stop(crds, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=livestream("s", PUMPFUN))
    other = {"pumpfun": {"mintId": MINT[:-1] + "x"}}
    moved = kubectl("apply", "-n", namespace, "-f", "-", input=livestream("s", other), check=False)
    assert moved.returncode != 0 and "source is immutable" in moved.stderr
    # Everything else in a LiveStream may change, but the claim may only grow and keep its class.
    kubectl("apply", "-n", namespace, "-f", "-", input=livestream("s", PUMPFUN, suspend=True))
    grown = livestream("s", PUMPFUN, suspend=True, storage={"size": "20Gi"})
    kubectl("apply", "-n", namespace, "-f", "-", input=grown)
    for storage, words in [
        ({"size": "10Gi"}, "storage.size may only grow"),
        ({"size": "20000Mi"}, "storage.size may only grow"),  # less, in other units
        ({"size": "20Gi", "storageClassName": "fast"}, "storageClassName is immutable"),
    ]:
        changed = livestream("s", PUMPFUN, suspend=True, storage=storage)
        result = kubectl("apply", "-n", namespace, "-f", "-", input=changed, check=False)
        assert result.returncode != 0 and words in result.stderr, (storage, result.stderr)
    classed = livestream("c", PUMPFUN, storage={"storageClassName": "slow"})
    kubectl("apply", "-n", namespace, "-f", "-", input=classed)
    moved = livestream("c", PUMPFUN, storage={"storageClassName": "fast"})
    result = kubectl("apply", "-n", namespace, "-f", "-", input=moved, check=False)
    assert result.returncode != 0 and "storageClassName is immutable" in result.stderr
    longest = livestream("c" * 52, PUMPFUN)  # <name>-recordings: 63 characters
    kubectl("apply", "-n", namespace, "-f", "-", input=longest)

    kubectl("apply", "-n", namespace, "-f", "-", input=recording("r", format="h264"))
    edit = kubectl(
        "apply", "-n", namespace, "-f", "-", input=recording("r", format="vp9"), check=False
    )
    assert (
        edit.returncode != 0
        and "spec.format" in edit.stderr
        and "format is immutable" in edit.stderr
    )
    added = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=recording("r", format="h264", maxFps=10),
        check=False,
    )
    assert added.returncode != 0 and "immutable" in added.stderr
    kubectl("apply", "-n", namespace, "-f", "-", input=recording("r", format="h264", stopped=True))
    back = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=recording("r", format="h264", stopped=False),
        check=False,
    )
    assert back.returncode != 0 and "stopped may only change from false to true" in back.stderr


def test_h264_may_be_written_as_mpegts_and_the_container_is_immutable(crds, kubectl, namespace):
    """`container` is optional: manifests without it keep their format's own container."""
    apply = ("apply", "-n", namespace, "-f", "-")
    kubectl(*apply, input=recording("ts", format="h264", container="mpegts"))
    kubectl(*apply, input=recording("mp4", format="h264", container="mp4"))
    kubectl(*apply, input=recording("webm", format="vp9", container="webm"))
    got = json.loads(kubectl("get", "-n", namespace, "rec", "ts", "-o", "json").stdout)["spec"]
    assert got["format"] == "h264" and got["container"] == "mpegts"
    for spec in ({"container": "mp4"}, {}):
        edit = kubectl(*apply, input=recording("ts", format="h264", **spec), check=False)
        assert edit.returncode != 0 and "container is immutable" in edit.stderr, edit.stderr
    wide = kubectl("get", "-n", namespace, "rec", "ts", "-o", "wide").stdout.splitlines()
    assert "CONTAINER" in wide[0].split() and "mpegts" in wide[1].split()


def test_printer_columns_short_names_and_category(crds, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=livestream("s", PUMPFUN))
    kubectl("apply", "-n", namespace, "-f", "-", input=recording("r"))
    header = kubectl("get", "-n", namespace, "ls").stdout.splitlines()[0].split()
    assert header == ["NAME", "SOURCE", "PHASE", "VIEWERS", "RECORDINGS", "AGE"]
    header = kubectl("get", "-n", namespace, "rec").stdout.splitlines()[0].split()
    assert header == ["NAME", "STREAM", "FORMAT", "PHASE", "DURATION", "SIZE", "AGE"]
    names = kubectl("get", "-n", namespace, "haven", "-o", "name").stdout.split()
    assert sorted(names) == ["livestream.streams.haven.dev/s", "recording.streams.haven.dev/r"]
    explained = kubectl("explain", "livestream.spec.source.pumpfun.mintId").stdout
    assert "base58" in explained


def test_crd_files_parse_and_cover_status(crds):
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert (
            "observedGeneration"
            in version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        )
