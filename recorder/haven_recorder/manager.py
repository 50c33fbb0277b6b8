"""The StreamManager: the pod's one LiveKit connection, fanned out to every handler.

It follows one publisher (a configured identity, or the first participant that publishes
video) and subscribes to that participant's video and audio only. It reconnects with
backoff and a fresh token when the connection drops or the token API says the stream is not
live, while handlers stay registered and viewers stay connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from livekit import rtc

from . import metrics
from .clock import AudioClock, ClockLog, DelayEstimate, VideoClock
from .fanout import FanOut
from .frames import AudioFrame, StereoDetector, VideoFrame, remix
from .health import Health, contained
from .sources import Source, SourceError

log = logging.getLogger("haven.stream")

# The jitter-buffer delay is read this often (see clock.DelayEstimate).
STATS_INTERVAL = 0.25  # seconds
# Degrees clockwise a received picture must be turned to stand upright.
ROTATION_DEGREES = {
    rtc.VideoRotation.VIDEO_ROTATION_0: 0,
    rtc.VideoRotation.VIDEO_ROTATION_90: 90,
    rtc.VideoRotation.VIDEO_ROTATION_180: 180,
    rtc.VideoRotation.VIDEO_ROTATION_270: 270,
}
TF_STEREO = 0  # livekit's AudioTrackFeature.TF_STEREO


class StreamState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    OFFLINE = "offline"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass
class StreamInfo:
    state: StreamState = StreamState.CONNECTING
    participant: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: int = 0
    last_frame_time: float | None = None  # wall clock, seconds
    reason: str = "Starting"
    message: str = ""
    connects: int = 0
    state_since: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return {
            "state": self.state.value,
            "participant": self.participant,
            "video": {"width": self.width, "height": self.height, "fps": round(self.fps, 2)},
            "videoCodec": self.video_codec,
            "audio": {"sampleRate": self.sample_rate, "channels": self.channels},
            "audioCodec": self.audio_codec,
            "lastFrameTime": self.last_frame_time,
            "reason": self.reason,
            "message": self.message,
            "connects": self.connects,
            "stateSince": self.state_since,
        }


class StreamManager:
    def __init__(
        self,
        source: Source,
        fanout: FanOut,
        *,
        participant_identity: str | None = None,
        audio: bool = True,
        sample_rate: int = 48000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.source = source
        self.fanout = fanout
        self.identity = participant_identity
        self.audio = audio
        self.sample_rate = sample_rate
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.info = StreamInfo()
        self.state_changed = asyncio.Condition()
        self._listeners: list[asyncio.Queue[dict]] = []
        self._room: rtc.Room | None = None
        self._publisher: str | None = None
        self._readers: dict[str, asyncio.Task] = {}  # track sid -> reader task
        self._disconnected = asyncio.Event()
        self._stopping = False
        self._frame_times: deque[float] = deque(maxlen=60)
        # Receive-side delay of each kind (seconds), from WebRTC's jitter-buffer statistics;
        # the clocks (see clock.py) subtract it so audio and video share one timeline.
        self.receive_delay: dict[int, float] = {}
        # The pod's liveness (health.py): a track reader that raises makes the pod unhealthy.
        self.health: Health | None = None

    # -- state -------------------------------------------------------------------------------

    def _set_state(self, state: StreamState, reason: str, message: str = "") -> None:
        info = self.info
        if (info.state, info.reason, info.message) == (state, reason, message):
            return
        if info.state != state:
            info.state_since = time.time()
            log.info("stream %s -> %s (%s) %s", info.state, state, reason, message)
        info.state, info.reason, info.message = state, reason, message
        metrics.STREAM_STATE.state(state.value)
        event = {"type": "status", **info.as_dict()}
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    def listen(self) -> asyncio.Queue[dict]:
        """A bounded queue of status events (for viewers); drop it with `unlisten`."""
        queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=16)
        self._listeners.append(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[dict]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(queue)

    # -- connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.backoff_initial
        first = True
        while not self._stopping:
            self._set_state(
                StreamState.CONNECTING if first else StreamState.RECONNECTING,
                "Connecting" if first else "Reconnecting",
                self.source.describe(),
            )
            first = False
            try:
                token = await self.source.token()
            except SourceError as exc:
                self._set_state(StreamState.OFFLINE, exc.reason, exc.message)
            except Exception as exc:  # e.g. a join API URL with port 99999: retry, later
                contained("connection", exc, f"getting a token for {self.source.describe()} failed")
                self._set_state(StreamState.OFFLINE, "TokenFailed", repr(exc)[:300])
            else:
                try:
                    await self._session(token)
                    backoff = self.backoff_initial  # it connected: start the backoff over
                except (rtc.ConnectError, TimeoutError, OSError) as exc:
                    self._set_state(StreamState.OFFLINE, "ConnectFailed", str(exc) or repr(exc))
                except Exception as exc:  # never let the one connection's loop die
                    contained("connection", exc, "the stream session failed")
                    self._set_state(StreamState.OFFLINE, "Error", repr(exc)[:300])
            if self._stopping:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)
        self._set_state(StreamState.STOPPED, "Stopped")

    async def stop(self) -> None:
        self._stopping = True
        self._disconnected.set()

    async def _session(self, token: str) -> None:
        """One connection, from connect to disconnect."""
        room = rtc.Room()
        self._room, self._publisher = room, None
        self._disconnected.clear()
        room.on("track_published", self._on_track_published)
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_gone)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("disconnected", lambda reason: self._disconnected.set())
        room.on(
            "reconnecting", lambda: self._set_state(StreamState.RECONNECTING, "SignalReconnecting")
        )
        room.on("reconnected", self._on_reconnected)
        try:
            await asyncio.wait_for(
                room.connect(self.source.url, token, rtc.RoomOptions(auto_subscribe=False)), 20
            )
            self.info.connects += 1
            log.info("connected to %s", self.source.describe())
            self._choose_publisher()
            await self._disconnected.wait()
        finally:
            for task in self._readers.values():
                task.cancel()
            await asyncio.gather(*self._readers.values(), return_exceptions=True)
            self._readers.clear()
            self._room, self._publisher = None, None
            self.info.participant = None
            with contextlib.suppress(Exception):
                await room.disconnect()
        if not self._stopping:
            self._set_state(
                StreamState.RECONNECTING, "Disconnected", "the connection to LiveKit dropped"
            )

    # -- publisher choice and subscriptions ------------------------------------------------

    def _wanted(self, participant: rtc.RemoteParticipant) -> bool:
        if self._publisher is not None:
            return participant.identity == self._publisher
        if self.identity is not None:
            return participant.identity == self.identity
        return any(
            pub.kind == rtc.TrackKind.KIND_VIDEO for pub in participant.track_publications.values()
        )

    def _choose_publisher(self) -> None:
        assert self._room is not None
        for participant in self._room.remote_participants.values():
            if self._wanted(participant):
                self._follow(participant)
                return
        who = f"participant {self.identity}" if self.identity else "a participant publishing video"
        self._set_state(StreamState.OFFLINE, "NoPublisher", f"waiting for {who}")

    def _follow(self, participant: rtc.RemoteParticipant) -> None:
        self._publisher = participant.identity
        self.info.participant = participant.identity
        log.info("following publisher %s", participant.identity)
        for pub in participant.track_publications.values():
            self._maybe_subscribe(pub)

    def _maybe_subscribe(self, pub: rtc.RemoteTrackPublication) -> None:
        if pub.kind == rtc.TrackKind.KIND_VIDEO or (
            self.audio and pub.kind == rtc.TrackKind.KIND_AUDIO
        ):
            # One video and one audio track at most: never subscribe to everything.
            busy = {p.kind for sid, p in self._subscribed_pubs() if sid != pub.sid}
            if pub.kind not in busy:
                pub.set_subscribed(True)

    def _subscribed_pubs(self) -> list[tuple[str, rtc.RemoteTrackPublication]]:
        if self._room is None or self._publisher is None:
            return []
        participant = self._room.remote_participants.get(self._publisher)
        if participant is None:
            return []
        return [(sid, p) for sid, p in participant.track_publications.items() if p.subscribed]

    def _on_track_published(
        self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if self._publisher is None and self._wanted(participant):
            self._follow(participant)
        elif participant.identity == self._publisher:
            self._maybe_subscribe(pub)

    def _on_track_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if participant.identity != self._publisher:
            return
        mime = (pub.mime_type or "").split("/")[-1].lower() or None
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.info.video_codec = mime
            reader = self._read_video(track)
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self.info.audio_codec = mime
            reader = self._read_audio(track, stereo=TF_STEREO in pub.audio_features)
        else:
            return
        task = asyncio.create_task(
            self._with_delay_stats(track, reader), name=f"reader-{track.sid}"
        )
        if self.health is not None:  # it is cancelled when its track goes; it must not raise
            self.health.watch(task, "track-reader", may_return=True, may_cancel=True)
        self._readers[track.sid] = task

    def _on_track_gone(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant
    ) -> None:
        task = self._readers.pop(track.sid, None)
        if task:
            task.cancel()
        if track.kind == rtc.TrackKind.KIND_VIDEO and participant.identity == self._publisher:
            self._set_state(
                StreamState.OFFLINE, "VideoUnpublished", f"{participant.identity} stopped its video"
            )

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._publisher:
            return
        for task in self._readers.values():
            task.cancel()
        self._readers.clear()
        self._publisher, self.info.participant = None, None
        self._set_state(
            StreamState.OFFLINE, "PublisherLeft", f"{participant.identity} left the room"
        )
        self._choose_publisher()

    def _on_reconnected(self) -> None:
        if self._readers:
            self._set_state(StreamState.LIVE, "Live", f"receiving from {self._publisher}")
        else:
            self._choose_publisher()

    # -- readers -----------------------------------------------------------------------------

    async def _with_delay_stats(self, track: rtc.Track, reader) -> None:
        """Run `reader` while tracking the track's jitter-buffer delay once a second."""
        poller = asyncio.create_task(self._poll_delay(track))
        try:
            await reader
        finally:
            poller.cancel()
            self.receive_delay.pop(track.kind, None)

    async def _poll_delay(self, track: rtc.Track) -> None:
        estimate = DelayEstimate()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            try:
                stats = await track.get_stats()
            except Exception as exc:  # stats are best effort; the media keeps flowing
                log.debug("no stats for %s: %s", track.sid, exc)
                continue
            for s in stats:
                if s.WhichOneof("stats") != "inbound_rtp":
                    continue
                inbound = s.inbound_rtp.inbound
                delay = estimate.add(
                    inbound.jitter_buffer_delay, inbound.jitter_buffer_emitted_count
                )
                if delay is not None:
                    self.receive_delay[track.kind] = delay

    async def _read_video(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420, capacity=4)
        clock, clock_log = VideoClock(), ClockLog()
        try:
            async for event in stream:
                now = time.monotonic()
                f = event.frame
                delay = self.receive_delay.get(rtc.TrackKind.KIND_VIDEO, 0.0)
                meta = event.metadata
                user_ts = (
                    meta.user_timestamp
                    if meta is not None and meta.HasField("user_timestamp")
                    else None
                )
                pts = clock.capture_time(now, event.timestamp_us, delay, user_ts)
                if clock_log:
                    clock_log.write("v", t=now, r=event.timestamp_us, ut=user_ts, d=delay, pts=pts)
                # The picture is turned upright by the handlers, in their threads.
                rotation = ROTATION_DEGREES.get(event.rotation, 0)
                frame = VideoFrame(f.width, f.height, f.data, pts, rotation)
                info = self.info
                (info.width, info.height), info.last_frame_time = frame.upright_size, time.time()
                self._frame_times.append(now)
                if len(self._frame_times) > 1:
                    span = self._frame_times[-1] - self._frame_times[0]
                    info.fps = (len(self._frame_times) - 1) / span if span > 0 else 0.0
                if info.state != StreamState.LIVE:
                    self._set_state(StreamState.LIVE, "Live", f"receiving from {self._publisher}")
                self.fanout.publish(frame)
        finally:
            await stream.aclose()

    async def _read_audio(self, track: rtc.Track, stereo: bool) -> None:
        """Audio at `sample_rate` (the SDK resamples 44.1 kHz and others), in the source's
        channels: decoded as two, and published as one until the track says it is stereo or
        its channels clearly differ (see StereoDetector)."""
        stream = rtc.AudioStream(track, sample_rate=self.sample_rate, num_channels=2, capacity=50)
        self.info.sample_rate, self.info.channels = self.sample_rate, 2 if stereo else 1
        clock, clock_log = AudioClock(self.sample_rate), ClockLog()
        detector = StereoDetector()
        try:
            async for event in stream:
                f = event.frame
                delay = self.receive_delay.get(rtc.TrackKind.KIND_AUDIO, 0.0)
                now = time.monotonic()
                pts = clock.capture_time(now, f.samples_per_channel, delay)
                data = bytes(f.data)
                if clock_log:
                    loud = int(np.abs(np.frombuffer(data, np.int16)).max(initial=0))
                    clock_log.write(
                        "a", t=now, s=f.samples_per_channel, d=delay, pts=pts, loud=loud
                    )
                if not stereo:
                    pcm = np.frombuffer(data, np.int16).reshape(-1, f.num_channels)
                    if detector.add(pcm):  # stereo from now on
                        stereo, self.info.channels = True, 2
                        log.info("the audio track %s is stereo", track.sid)
                    else:
                        data = remix(pcm, 1).tobytes()
                channels = 2 if stereo else 1
                self.fanout.publish(AudioFrame(data, f.sample_rate, channels, pts))
        finally:
            await stream.aclose()
