"""The StreamManager: the pod's one LiveKit connection, fanned out to every handler.

It follows one publisher (a configured identity, or the first participant that publishes
video, else audio) and of its tracks exactly one video and one audio track, by the rule in
tracks.py; when the followed track is unpublished the next one takes over, and a new track's
reader starts only once the old one has ended. It subscribes to a kind only while a handler
wants it (fanout demand: a viewer or a recording), so an idle pod decodes nothing; the
stream is live from what is published, not from frames. It reconnects with backoff and a
fresh token when the connection drops or the token API says the stream is not live, while
handlers stay registered and viewers stay connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
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
from .tracks import AUDIO_RANK, VIDEO_RANK, TrackRef, availability, pick

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
KINDS = {rtc.TrackKind.KIND_VIDEO: "video", rtc.TrackKind.KIND_AUDIO: "audio"}
# A kind no handler wants any more is unsubscribed this much later: a viewer that reloads
# the page, or the next recording, finds it still subscribed.
IDLE_LINGER = 5.0  # seconds


def source_name(source: int) -> str:
    """`rtc.TrackSource.SOURCE_SCREENSHARE` -> "screen_share" (the names tracks.py ranks)."""
    name = rtc.TrackSource.Name(source).removeprefix("SOURCE_").lower()
    return {"screenshare": "screen_share", "screenshare_audio": "screen_share_audio"}.get(
        name, name
    )


def _codec(pub: rtc.RemoteTrackPublication) -> str | None:
    return (pub.mime_type or "").split("/")[-1].lower() or None


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
    missing: list[str] = field(default_factory=lambda: ["video", "audio"])
    video_track: str | None = None  # the followed video track's sid
    video_track_info: dict | None = None  # its sid, name and source
    subscribed: dict[str, bool] = field(default_factory=lambda: {"video": False, "audio": False})
    frames_decoded: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})

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
            "missing": list(self.missing),
            "videoTrack": self.video_track_info,
            "subscribed": dict(self.subscribed),
            "framesDecoded": dict(self.frames_decoded),
        }


class StreamManager:
    def __init__(
        self,
        source: Source,
        fanout: FanOut,
        *,
        participant_identity: str | None = None,
        video_track: str | None = None,
        audio: bool = True,
        idle_linger: float = IDLE_LINGER,
        sample_rate: int = 48000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.source = source
        self.fanout = fanout
        self.identity = participant_identity
        self.video_track = video_track  # preferred video: a track name or source (tracks.py)
        self.audio = audio
        self.idle_linger = idle_linger
        self.sample_rate = sample_rate
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.info = StreamInfo()
        self.state_changed = asyncio.Condition()
        self._listeners: list[asyncio.Queue[dict]] = []
        self._room: rtc.Room | None = None
        self._publisher: str | None = None
        self._readers: dict[int, tuple[str, asyncio.Task]] = {}  # kind -> track sid, reader
        self._retiring: dict[int, asyncio.Task] = {}  # kind -> a stopped reader, still ending
        self._asked: dict[int, str | None] = {}  # kind -> the track sid asked for
        self._order: dict[str, int] = {}  # track sid -> publish order
        self._published = itertools.count(1)
        # Per kind: whether a handler wants it (fanout demand, lingering; see _demand_changed).
        self._active = {kind: fanout.wants(name) for kind, name in KINDS.items()}
        self._linger: dict[int, asyncio.TimerHandle] = {}
        fanout.watch_demand(self._demand_changed)
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
        room.on("track_unpublished", self._on_track_unpublished)
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
            readers = [task for _, task in self._readers.values()]
            self._forget_tracks()
            await asyncio.gather(*readers, return_exceptions=True)
            self._order.clear()
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
        return self._publishes(participant, rtc.TrackKind.KIND_VIDEO) or (
            self.audio and self._publishes(participant, rtc.TrackKind.KIND_AUDIO)
        )

    @staticmethod
    def _publishes(participant: rtc.RemoteParticipant, kind: int) -> bool:
        return any(p.kind == kind for p in participant.track_publications.values())

    def _choose_publisher(self) -> None:
        """Follow the configured identity, else the first participant publishing video, else
        the first publishing audio; or say whom the pod waits for."""
        assert self._room is not None
        candidates = [p for p in self._room.remote_participants.values() if self._wanted(p)]
        with_video = [p for p in candidates if self._publishes(p, rtc.TrackKind.KIND_VIDEO)]
        if chosen := (with_video or candidates):
            self._follow(chosen[0])
            return
        who = f"participant {self.identity}" if self.identity else "a participant publishing"
        self._set_state(StreamState.OFFLINE, "NoPublisher", f"waiting for {who}")

    def _follow(self, participant: rtc.RemoteParticipant) -> None:
        self._publisher = participant.identity
        self.info.participant = participant.identity
        log.info("following publisher %s", participant.identity)
        for pub in participant.track_publications.values():
            self._order.setdefault(pub.sid, next(self._published))
        self._sync()

    def _followed(self) -> rtc.RemoteParticipant | None:
        if self._room is None or self._publisher is None:
            return None
        return self._room.remote_participants.get(self._publisher)

    def _choice(self, kind: int) -> rtc.RemoteTrackPublication | None:
        """The followed publisher's track of `kind` the rule picks (tracks.pick)."""
        participant = self._followed()
        if participant is None or (kind == rtc.TrackKind.KIND_AUDIO and not self.audio):
            return None
        pubs = {s: p for s, p in participant.track_publications.items() if p.kind == kind}
        refs = [
            TrackRef(sid, p.name, source_name(p.source), self._order.setdefault(sid, 0))
            for sid, p in pubs.items()
        ]
        video = kind == rtc.TrackKind.KIND_VIDEO
        rank = VIDEO_RANK if video else AUDIO_RANK
        picked = pick(refs, rank, self.video_track if video else None)
        return pubs[picked.sid] if picked else None

    def _sync(self) -> None:
        """Bring the subscriptions in line with the rule and the demand: per kind, the chosen
        track while someone wants that kind, none otherwise. Then the state, from what is
        published (not from frames)."""
        participant = self._followed()
        chosen = {kind: self._choice(kind) for kind in KINDS}
        for kind, pub in chosen.items():
            want = pub.sid if pub is not None and self._active[kind] else None
            have = self._asked.get(kind)
            if want == have:
                continue
            if have is not None:
                self._stop_reader(kind, have)
                old = participant.track_publications.get(have) if participant else None
                if old is not None:
                    old.set_subscribed(False)
                log.info("unsubscribed from %s track %s", KINDS[kind], have)
            self._asked[kind] = want
            if pub is not None and want is not None:
                # Asked for once; `subscribed` only turns true when the SDK has the track, so
                # it is never what decides (it let camera and screen share both in).
                pub.set_subscribed(True)
                log.info(
                    "subscribing to %s track %s (%s, %r)",
                    KINDS[kind], pub.sid, source_name(pub.source), pub.name,
                )  # fmt: skip
        self._describe(chosen)

    def _describe(self, chosen: dict[int, rtc.RemoteTrackPublication | None]) -> None:
        info = self.info
        video, audio = chosen[rtc.TrackKind.KIND_VIDEO], chosen[rtc.TrackKind.KIND_AUDIO]
        if video is not None:
            if info.video_track != video.sid:
                info.video_track = video.sid
                # As published, until frames give the upright size; the rate only from frames.
                info.width, info.height, info.fps = video.width, video.height, 0.0
            info.video_track_info = {
                "sid": video.sid, "name": video.name, "source": source_name(video.source)
            }  # fmt: skip
            info.video_codec = _codec(video) or info.video_codec
        else:
            info.video_track, info.video_track_info = None, None
            info.width = info.height = 0
            info.fps = 0.0
        if audio is not None:
            info.audio_codec = _codec(audio) or info.audio_codec
            if not info.sample_rate:
                stereo = TF_STEREO in audio.audio_features
                info.sample_rate, info.channels = self.sample_rate, 2 if stereo else 1
        info.subscribed = {
            KINDS[k]: self._asked.get(k) is not None and self._readers.get(k) is not None
            for k in KINDS
        }
        if self._publisher is None:
            return
        state = availability(video is not None, audio is not None, self.audio)
        info.missing = list(state.missing)
        if state.live:
            what = ", ".join(state.missing)
            message = f"{self._publisher} publishes" + (f" no {what}" if what else "")
            self._set_state(StreamState.LIVE, state.reason, message)
        else:
            self._set_state(
                StreamState.OFFLINE, state.reason, f"{self._publisher} publishes no tracks"
            )

    def published_size(self) -> tuple[int, int] | None:
        """The followed video track's size as its publisher announced it (before rotation),
        or None. A recording plans its picture from it: the first frames a new subscription
        gets are often smaller (WebRTC ramps up, a busy publisher's encoder scales down)."""
        pub = self._choice(rtc.TrackKind.KIND_VIDEO)
        if pub is None or pub.width <= 0 or pub.height <= 0:
            return None
        return pub.width, pub.height

    # -- demand (lazy subscription) ---------------------------------------------------------

    def _demand_changed(self) -> None:
        """A kind is subscribed as soon as a handler wants it and dropped IDLE_LINGER seconds
        after the last one stopped wanting it (a viewer that reloads keeps its stream)."""
        for kind, name in KINDS.items():
            wanted = self.fanout.wants(name)
            timer = self._linger.pop(kind, None)
            if timer is not None:
                timer.cancel()
            if wanted and not self._active[kind]:
                self._active[kind] = True
                self._sync()
            elif not wanted and self._active[kind]:
                loop = asyncio.get_running_loop()
                self._linger[kind] = loop.call_later(self.idle_linger, self._go_idle, kind)

    def _go_idle(self, kind: int) -> None:
        self._linger.pop(kind, None)
        if not self.fanout.wants(KINDS[kind]):
            self._active[kind] = False
            self._sync()

    # -- events ------------------------------------------------------------------------------

    def _on_track_published(
        self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._order.setdefault(pub.sid, next(self._published))
        if self._publisher is None and self._wanted(participant):
            self._follow(participant)
        elif participant.identity == self._publisher:
            self._sync()

    def _on_track_unpublished(
        self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._order.pop(pub.sid, None)
        if participant.identity != self._publisher:
            return
        for kind, sid in list(self._asked.items()):
            if sid == pub.sid:  # the followed track went: the rule picks the next one
                self._stop_reader(kind, sid)
                self._asked[kind] = None
                log.info("%s track %s was unpublished", KINDS[kind], sid)
        self._sync()

    def _on_track_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        kind = track.kind
        if participant.identity != self._publisher or kind not in KINDS:
            return
        if self._asked.get(kind) != pub.sid:  # asked for earlier, and no longer wanted
            pub.set_subscribed(False)
            return
        if kind == rtc.TrackKind.KIND_VIDEO:
            self.info.video_codec = _codec(pub) or self.info.video_codec

            def reader():
                return self._read_video(track)
        else:
            self.info.audio_codec = _codec(pub) or self.info.audio_codec
            stereo = TF_STEREO in pub.audio_features

            def reader():
                return self._read_audio(track, stereo=stereo)

        # A reader for a re-published or replacing track starts only once the previous one of
        # its kind has ended: two never publish into the fan-out at once.
        previous = self._readers.pop(kind, None)
        if previous is not None:
            previous[1].cancel()
        after = previous[1] if previous else self._retiring.pop(kind, None)
        task = asyncio.create_task(
            self._run_reader(track, reader, after), name=f"reader-{track.sid}"
        )
        if self.health is not None:  # it is cancelled when its track goes; it must not raise
            self.health.watch(task, "track-reader", may_return=True, may_cancel=True)
        self._readers[kind] = (pub.sid, task)
        self._describe({k: self._choice(k) for k in KINDS})

    def _on_track_gone(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant
    ) -> None:
        if participant.identity == self._publisher:
            self._stop_reader(track.kind, pub.sid)

    def _stop_reader(self, kind: int, sid: str) -> None:
        reader = self._readers.get(kind)
        if reader is None or reader[0] != sid:
            return
        del self._readers[kind]
        reader[1].cancel()
        self._retiring[kind] = reader[1]
        if kind == rtc.TrackKind.KIND_VIDEO:
            self.info.fps = 0.0
        self.info.subscribed[KINDS[kind]] = False

    def _forget_tracks(self) -> None:
        for _, task in self._readers.values():
            task.cancel()
        self._readers.clear()
        self._retiring.clear()
        self._asked.clear()
        info = self.info
        info.video_track = info.video_track_info = None
        info.width = info.height = info.sample_rate = info.channels = 0
        info.fps = 0.0
        info.subscribed = {"video": False, "audio": False}

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._publisher:
            return
        self._forget_tracks()
        self._publisher, self.info.participant = None, None
        self.info.missing = ["video", "audio"]
        self._set_state(
            StreamState.OFFLINE, "PublisherLeft", f"{participant.identity} left the room"
        )
        self._choose_publisher()

    def _on_reconnected(self) -> None:
        if self._followed() is not None:
            self._sync()
        else:
            self._publisher = None
            self._choose_publisher()

    # -- readers -----------------------------------------------------------------------------

    async def _run_reader(
        self, track: rtc.Track, reader: Callable[[], Awaitable[None]], after: asyncio.Task | None
    ) -> None:
        """Run `reader()` once `after` (the previous reader of this kind) has ended, while
        tracking the track's jitter-buffer delay."""
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        poller = asyncio.create_task(self._poll_delay(track))
        try:
            await reader()
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
        self._frame_times.clear()
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
                info.frames_decoded["video"] += 1
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
                self.info.frames_decoded["audio"] += 1
                self.fanout.publish(AudioFrame(data, f.sample_rate, channels, pts))
        finally:
            await stream.aclose()
