"""The pump.fun source against a local stand-in of its join API."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest
from livekit import api

from haven_localcluster.pumpfun import PumpFunStandIn
from haven_recorder.sources import PumpFunSource, SourceError, token_expiry

MINT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"  # base58, 44 characters


@pytest.fixture
def standin(livekit_server):
    server = PumpFunStandIn(livekit_server.api_key, livekit_server.api_secret)
    server.start()
    yield server
    server.stop()


async def test_join_sends_the_real_request_and_reports_not_live(standin):
    source = PumpFunSource(MINT, api_url=standin.url, url="ws://unused")
    with pytest.raises(SourceError) as not_live:
        await source.token()
    assert not_live.value.reason == "NotLive" and MINT in not_live.value.message

    standin.live[MINT] = "some-room"
    token = await source.token()  # the stand-in answers only with Origin https://pump.fun
    expiry = token_expiry(token)
    assert expiry is not None and expiry > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=14)

    unreachable = PumpFunSource(MINT, api_url="http://127.0.0.1:9", url="ws://unused")
    with pytest.raises(SourceError) as down:
        await unreachable.token()
    assert down.value.reason == "JoinAPIUnreachable"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, '{"error": "unauthorized"}', "JoinForbidden"),
        (403, "forbidden", "JoinForbidden"),
        (500, "internal error", "JoinFailed"),
        (503, "<html>upstream down</html>", "JoinFailed"),
        (200, '{"token": "eyJ', "JoinFailed"),  # cut short: not JSON
        (200, '{"token": 42}', "NotLive"),
        (200, "{}", "NotLive"),
    ],
)
async def test_join_errors_get_a_reason_and_the_servers_words(standin, status, body, reason):
    standin.faults[MINT] = (status, body)
    source = PumpFunSource(MINT, api_url=standin.url, url="ws://unused")
    with pytest.raises(SourceError) as failed:
        await source.token()
    assert failed.value.reason == reason, failed.value.message
    assert f"{status}: " in failed.value.message  # the server's status and words


async def test_a_revoked_join_shows_in_the_pods_state_and_it_recovers(
    livekit_server, start_publisher, stream_pod, standin
):
    """pump.fun ends the pod's session (the participant is removed) and then refuses to let
    it join again: the pod says why, keeps trying, and goes live once joins work again."""
    args = [
        "--source", "pumpfun", "--mint-id", MINT, "--pumpfun-api-url", standin.url,
        "--pumpfun-livekit-url", livekit_server.url,
    ]  # fmt: skip
    room = f"pump-{MINT[:8]}-{uuid.uuid4().hex[:6]}"  # own room: stale viewers linger
    start_publisher(room)
    standin.live[MINT] = room
    pod = stream_pod(*args)
    pod.wait_state("live", timeout=60)
    standin.faults[MINT] = (401, '{"error": "token revoked"}')
    lk = api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
    try:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        for p in listed.participants:
            if p.identity.startswith("viewer-"):
                await lk.room.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity=p.identity)
                )
    finally:
        await lk.aclose()
    refused = await asyncio.to_thread(pod.wait_state, "offline", 60, "JoinForbidden")
    assert "401" in refused["message"] and "token revoked" in refused["message"], refused
    del standin.faults[MINT]
    await asyncio.to_thread(pod.wait_state, "live", 90)


async def test_pod_on_a_pumpfun_mint_goes_live_and_refreshes_an_expired_token(
    livekit_server, start_publisher, stream_pod, standin
):
    standin.token_ttl = dt.timedelta(seconds=3)
    args = [
        "--source", "pumpfun", "--mint-id", MINT, "--pumpfun-api-url", standin.url,
        "--pumpfun-livekit-url", livekit_server.url,
    ]  # fmt: skip
    pod = stream_pod(*args)
    offline = pod.wait_state("offline", reason="NotLive")
    assert MINT in offline["message"]

    room = f"pump-{MINT[:8]}-{uuid.uuid4().hex[:6]}"  # own room: stale viewers linger
    start_publisher(room)
    standin.live[MINT] = room
    pod.wait_state("live", timeout=60)
    joins = len(standin.joins)

    await asyncio.sleep(4)  # the pod's token has expired by now
    lk = api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
    try:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        pod_identity = next(
            p.identity for p in listed.participants if p.identity.startswith("viewer-")
        )
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room=room, identity=pod_identity)
        )
    finally:
        await lk.aclose()
    deadline = time.monotonic() + 60
    status = pod.status()
    while not (status["connects"] >= 2 and status["state"] == "live"):
        assert time.monotonic() < deadline, f"the pod did not come back: {status}"
        await asyncio.sleep(0.2)
        status = pod.status()
    assert len(standin.joins) > joins, "reconnecting must fetch a fresh token"
