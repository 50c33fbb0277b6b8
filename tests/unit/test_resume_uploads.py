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


def test_files_already_up_go_back_too_and_a_stopped_recording_only_completes():
    spec = {"format": "h264", "liveStreamRef": {"name": "ls"}}
    done = {
        "path": "r/r-part001.mp4", "url": "s3://b/rec/r/r-part001.mp4", "uploaded": True,
        "sizeBytes": 9, "durationSeconds": 1.5, "startedAt": "t0", "endedAt": "t1",
    }  # fmt: skip
    local_only = {"path": "r/r-part002.mp4", "uploaded": False, "url": "s3://b/rec/x"}
    entry = {"path": "r/r-part003.mp4", "key": "rec/r/r-part003.mp4", "uploadId": "u3"}
    status = {"files": [done, local_only], "objectStorage": {"openUploads": [entry]}}
    body = request_for("r", spec, status, stopped=True).body()
    assert body["uploadedFiles"] == [{k: v for k, v in done.items() if k != "uploaded"}]
    assert body["resumeUploads"] == [entry] and body["stopped"] is True
    assert "stopped" not in request_for("r", spec, status).body()


def test_a_new_pod_lists_what_is_up_and_never_reuses_its_numbers(tmp_path):
    """The pod's side: files already up are parts as they were (uploaded, no local file), an
    open upload is an orphan to complete, and the first part it writes takes the next free
    number, so its object never replaces one that is up."""
    from haven_recorder.fanout import FanOut
    from haven_recorder.recording import Recording, RecordingSpec
    from haven_recorder.upload import StorageSettings, Uploads

    uploads = Uploads(StorageSettings(bucket="b", endpoint="http://127.0.0.1:9", prefix="rec/"))
    done = {"path": "r/r-part001.mp4", "url": "s3://b/rec/r/r-part001.mp4", "uploaded": True}
    entry = {"path": "r/r-part002.mp4", "key": "rec/r/r-part002.mp4", "uploadId": "u2"}
    again = {**entry, "path": "r/r-part001.mp4"}  # the status not yet updated: the file wins
    parts = uploads.adopt([done, entry, again], "now")
    assert [(p.path, p.uploaded) for p in parts] == [
        ("r/r-part001.mp4", True),
        ("r/r-part002.mp4", False),
    ]
    assert parts[0].url == done["url"] and parts[0].upload["localMissing"]
    assert parts[1].upload["orphan"] and parts[1].url == "s3://b/rec/r/r-part002.mp4"
    rec = Recording(RecordingSpec("r", format="h264"), tmp_path, FanOut())
    rec.progress.parts.extend(parts)
    writer = rec._new_part()
    try:
        assert rec.progress.parts[-1].path == "r/r-part003.mp4"
    finally:
        writer.close()
    # Only the newest files handed back (a long recording), or a joined run: still after them.
    rec = Recording(RecordingSpec("r", format="h264"), tmp_path, FanOut())
    rec.progress.parts = [PartInfo("r/r-part002-004.mp4"), PartInfo("r/r-part007.mp4")]
    rec._new_part().close()
    assert rec.progress.parts[-1].path == "r/r-part008.mp4"
