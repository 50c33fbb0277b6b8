"""Deleting a finished recording and its files, on the control API (behind the control token):

    DELETE /recordings/{name}   its objects in the bucket, then its directory on the volume

Refused (409) while the recording is still running or finishing (stop it first); 404 if the
pod has no such recording. With object storage, every object of the recording goes first (the
parts, the joined file, parts already joined) and an upload still open is aborted; a bucket
that fails answers 503 with the server's words and nothing local is deleted, so a retry finds
everything where it was. Then the directory goes (the state file with it, so a restarted pod
does not list it again). The operator calls this for `deleteFilesWithRecording: true`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request

from .s3 import S3Error

if TYPE_CHECKING:
    from .recording import Recording, Recordings

log = logging.getLogger("haven.deletion")

router = APIRouter()


class Busy(Exception):
    """The recording is still running or finishing."""


def _busy(rec: Recording) -> bool:
    task = rec._task
    return rec.active or (task is not None and not task.done())


def _object_keys(recordings: Recordings, rec: Recording) -> tuple[list[str], list[str]]:
    """(the keys of every object the recording may have in our bucket, the URLs of objects it
    has elsewhere: uploaded under another bucket or prefix, left alone)."""
    uploads = recordings.uploads
    assert uploads is not None
    paths = [p.path for p in rec.progress.parts] + list(rec.progress.joinedFrom)
    upload = uploads.items.get(rec.spec.name)
    if upload is not None:
        paths += list(upload._seen)
    keys = [uploads.key(path) for path in dict.fromkeys(paths)]  # in order, once each
    ours = {uploads.settings.url(key) for key in keys}
    elsewhere = [p.url for p in rec.progress.parts if p.url and p.url not in ours]
    return keys, elsewhere


def _open_uploads(rec: Recording) -> dict[str, str]:
    """key path -> upload id of the multipart uploads not completed."""
    return {
        p.path: p.upload["uploadId"]
        for p in rec.progress.parts
        if p.upload and p.upload.get("uploadId") and not p.uploaded
    }


def _remove_directory(rec: Recording) -> list[str]:
    """Remove the recording's directory (blocking): the names of the files it held."""
    directory = rec.dir
    if not directory.exists():
        return []
    names = sorted(
        os.path.relpath(os.path.join(top, f), directory)
        for top, _, files in os.walk(directory)
        for f in files
    )
    shutil.rmtree(directory)  # refuses a symlink; fd-based, so it never follows one
    return [n for n in names if not n.startswith(".") and n != "recording.json"]


async def delete(recordings: Recordings, name: str) -> dict:
    """Delete the recording `name` (KeyError if unknown, Busy if running, S3Error if the
    bucket refused; nothing local is touched then)."""
    rec = recordings.items[name]
    if _busy(rec):
        raise Busy(f"recording {name!r} is {rec.progress.state.value}; stop it first")
    uploads = recordings.uploads
    deleted_objects: list[str] = []
    kept_objects: list[str] = []
    if uploads is not None:
        upload = uploads.items.get(name)
        if upload is not None and upload.task is not None and not upload.task.done():
            upload.task.cancel()
            await asyncio.gather(upload.task, return_exceptions=True)
        if upload is not None:
            await asyncio.to_thread(upload.close)  # its queued state writes land first
        keys, kept_objects = _object_keys(recordings, rec)
        for path, upload_id in _open_uploads(rec).items():
            with contextlib.suppress(S3Error):  # already completed or aborted
                await uploads.client.abort_multipart_upload(uploads.key(path), upload_id)
        for key in keys:
            await uploads.client.delete_object(key)  # absent already: 204 all the same
            deleted_objects.append(uploads.settings.url(key))
    else:
        kept_objects = [p.url for p in rec.progress.parts if p.url]
    # The recording's own state writes land before its directory goes (or one would bring it
    # back); then the directory, state file and all.
    await asyncio.to_thread(rec._io.shutdown, True)
    rec._executor.shutdown(wait=False)
    files = await asyncio.to_thread(_remove_directory, rec)
    recordings.items.pop(name, None)
    if uploads is not None:
        uploads.items.pop(name, None)
    log.info("deleted recording %s: %d files, %d objects", name, len(files), len(deleted_objects))
    return {
        "name": name,
        "deletedFiles": files,
        "deletedObjects": deleted_objects,
        "keptObjects": kept_objects,  # uploaded elsewhere than this pod's bucket: not touched
    }


@router.delete("/recordings/{name}")
async def delete_recording(request: Request, name: str) -> dict:
    """Delete a finished recording: its objects in the bucket, then its files on the volume.
    409 while it is running or finishing; 503 if the bucket refused (nothing was deleted
    locally: try again)."""
    recordings = request.app.state.pod.recordings
    try:
        return await delete(recordings, name)
    except KeyError as exc:
        raise HTTPException(404, f"no recording named {name!r}") from exc
    except Busy as exc:
        raise HTTPException(409, str(exc)) from exc
    except S3Error as exc:
        log.warning("could not delete the objects of %s: %s", name, exc)
        raise HTTPException(503, f"object storage: {exc}"[:500]) from exc
    except OSError as exc:
        log.warning("could not delete the files of %s: %s", name, exc)
        raise HTTPException(503, f"volume: {exc.strerror or exc}"[:500]) from exc
