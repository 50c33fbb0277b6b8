"""The uploads a lost pod left open: what the pod reports, what the operator hands back."""

from haven_operator.recording import request_for
from haven_recorder.recording import PartInfo
from haven_recorder.s3 import Part
from haven_recorder.upload import leading_run, open_uploads


def test_the_pod_reports_only_uploads_still_open():
    parts = [
        PartInfo("r/r-part001.mp4", uploaded=True, upload={"uploadId": "done"}),
        PartInfo("r/r-part002.mp4", uploaded=False, upload={"uploadId": "u2", "chunks": []}),
        PartInfo("r/r-part003.mp4", uploaded=False, upload={"uploadId": None, "chunks": []}),
        PartInfo("r/r-part004.mp4", uploaded=False, upload={"uploadId": "u4", "gaveUp": "x"}),
        PartInfo("r/r-part005.mp4", uploaded=False, upload={"uploadId": "u5", "key": "old/k"}),
    ]
    assert open_uploads(parts, lambda p: f"rec/{p}") == [
        {"path": "r/r-part002.mp4", "key": "rec/r/r-part002.mp4", "uploadId": "u2"},
        {"path": "r/r-part005.mp4", "key": "old/k", "uploadId": "u5"},
    ]


def test_an_orphan_is_completed_from_its_leading_run_of_chunks():
    listed = {n: Part(n, 5, f"e{n}") for n in (1, 2, 4)}
    assert [p.number for p in leading_run(listed)] == [1, 2]
    assert leading_run({2: Part(2, 5, "e")}) == []


def test_the_operator_hands_the_open_uploads_back_on_start():
    spec = {"format": "h264", "liveStreamRef": {"name": "ls"}}
    assert "resumeUploads" not in request_for("r", spec).body()
    entry = {"path": "r/r-part001.mp4", "key": "rec/r/r-part001.mp4", "uploadId": "u1"}
    status = {"objectStorage": {"bucket": "b", "openUploads": [entry, {"path": "x"}]}}
    assert request_for("r", spec, status).body()["resumeUploads"] == [entry]
