// Runs Haven Player's own client code (fixtures/, verbatim) against the gateway.
//
//   node run.mjs '<json>'   with {"scenario": "hook" | "player" | "api", "gateway": "http://...",
//                                  "token": "..." | null, "origin": "...", ...scenario fields}
//
// Prints one line `RESULT <json>` and exits 0, or prints the failure and exits 1. The pytest
// side (tests/gateway/test_haven_player.py) starts the mints and checks the cluster's view.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { install, makeBrowser, sleep, waitFor } from './lib/browser.mjs';
import { guidePlayer, load } from './lib/fixtures.mjs';
import { recordWithHook, renderHook } from './lib/hook.mjs';
import { makePage, toneHz } from './lib/player.mjs';

const require = createRequire(import.meta.url);
const args = JSON.parse(process.argv[2]);
const uncaught = [];
process.on('uncaughtException', (err) => uncaught.push(String(err && err.stack || err)));

// useRecording.ts of each revision: start, poll, stop; then at once start and stop again
// (a user who clicks twice); and, given a mint that is not live, the error text it shows.
async function hook() {
  const browser = makeBrowser(args);
  install(browser);
  const results = {};
  for (const [revision, mint] of Object.entries(args.revisions)) {
    const { useRecording } = await load(`${revision}/frontend/src/hooks/useRecording.ts`);
    const probe = await renderHook(useRecording, mint);
    const first = await recordWithHook(probe, { seconds: args.seconds, log: browser.log });
    const result = { first };
    if (args.again && args.again.includes(revision)) {
      result.again = await recordWithHook(probe, { seconds: 1, log: browser.log });
    }
    const sent = browser.log.filter((e) => e.url === '/api/recording/start');
    result.requests = browser.log.length;
    result.recordingStarts = sent.length;
    probe.renderer.unmount();
    results[revision] = result;
  }
  if (args.notLive) {
    const [revision, mint] = args.notLive;
    const { useRecording } = await load(`${revision}/frontend/src/hooks/useRecording.ts`);
    const probe = await renderHook(useRecording, mint);
    await probe.current.startRecording();
    results.notLive = { error: probe.current.error, isRecording: probe.current.isRecording };
    probe.renderer.unmount();
  }
  const preflights = browser.log.filter((e) => e.preflight !== undefined).length;
  return { revisions: results, preflights, calls: browser.log.length };
}

// The guide's LiveStreamPlayer: start the session, take frames and audio, ping, record,
// stop the recording, stop the session; a second socket sees the end, a third is refused.
async function player() {
  const browser = makeBrowser(args);
  install(browser);
  const page = makePage();
  const LiveStreamPlayer = guidePlayer('b2e5334/backend/FRONTEND_INTEGRATION_GUIDE.md');
  const p = new LiveStreamPlayer(args.mint);
  const started = await p.startSession();
  assert.equal(started.success, true);
  await waitFor('frames and audio', () => page.drawn.length >= 10 && page.buffers.length >= 100, {
    timeout: 90000,
  });
  const socket = p.ws; // the player drops it at stopSession
  p.ws.send('ping');
  await waitFor('a JSON pong', () => p.ws.received.some((m) => JSON.parse(m).type === 'pong'), {
    timeout: 30000,
  });
  const rec = await p.startRecording(args.outputFormat || 'av1', 'medium');
  assert.equal(rec.success, true);
  const status = await p.getRecordingStatus();
  assert.equal(status.is_recording, true, JSON.stringify(status));
  await sleep(args.recordSeconds * 1000);
  const stopped = await p.stopRecording();
  assert.equal(stopped.success, true);
  const observer = new browser.WebSocket(`ws://localhost:8000/api/live-sessions/stream/${args.mint}`);
  await waitFor('the observer socket to open', () => observer.readyState === 1, { timeout: 30000 });
  const ended = await p.stopSession();
  assert.equal(ended.success, true);
  await waitFor('the observer socket to close', () => observer.closeEvent, { timeout: 120000 });
  const refused = new browser.WebSocket(`ws://localhost:8000/api/live-sessions/stream/${args.otherMint}`);
  await waitFor('the refused socket to close', () => refused.closeEvent, { timeout: 30000 });
  const all = browser.sockets.flatMap((s) => s.received);
  const types = {};
  for (const m of all) {
    const t = JSON.parse(m).type; // every message is JSON text
    types[t] = (types[t] || 0) + 1;
  }
  const last = (s) => JSON.parse(s.received[s.received.length - 1] || 'null');
  return {
    started,
    recording: rec,
    status,
    stopped,
    sessionStopped: ended,
    frames: page.drawn.length,
    frameSize: page.drawn[0],
    badImages: page.badImages,
    audioBuffers: page.buffers.length,
    audioPlayed: page.played,
    audioSampleRates: [...new Set(page.buffers.map((b) => b.sampleRate))],
    audioChannels: [...new Set(page.buffers.map((b) => b.numberOfChannels))],
    tone: toneHz(
      socket.received.map((m) => JSON.parse(m)).filter((m) => m.type === 'audio_frame'),
      page.buffers[0] && page.buffers[0].sampleRate,
    ),
    messageTypes: types,
    observer: { last: last(observer), close: observer.closeEvent },
    refused: { messages: refused.received.map((m) => JSON.parse(m)), close: refused.closeEvent },
  };
}

// api.ts's recordingService through axios (its fetch adapter, so the page's CORS rules
// apply): session, recording, status, the active list, the formats, stop.
async function api() {
  const browser = makeBrowser(args);
  install(browser);
  const axios = require('axios');
  axios.defaults.adapter = 'fetch';
  const { recordingService } = await load('376d7b6/frontend/src/services/api.ts');
  const mint = args.mint;
  const out = {};
  out.session = await recordingService.startSession(mint);
  out.start = await recordingService.startRecording({
    mint_id: mint,
    output_format: args.outputFormat,
    video_quality: 'low',
  });
  out.status = await recordingService.getRecordingStatus(mint);
  out.active = await recordingService.getActiveRecordings();
  out.formats = await recordingService.getSupportedFormats();
  await sleep(args.recordSeconds * 1000);
  out.stop = await recordingService.stopRecording({ mint_id: mint });
  out.after = await recordingService.getRecordingStatus(mint);
  out.stopSession = await recordingService.stopSession(mint);
  try {
    await recordingService.stopRecording({ mint_id: mint });
    out.stopAgain = 'no error';
  } catch (err) {
    out.stopAgain = { status: err.response && err.response.status, data: err.response && err.response.data };
  }
  out.preflights = browser.log.filter((e) => e.preflight !== undefined).length;
  return out;
}

const scenarios = { hook, player, api };
try {
  const result = await scenarios[args.scenario]();
  if (uncaught.length) throw new Error(`uncaught in the client's code: ${uncaught.join('\n')}`);
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(0);
} catch (err) {
  console.error(err && err.stack ? err.stack : err);
  if (err && err.cause) console.error('caused by:', err.cause);
  if (uncaught.length) console.error(uncaught.join('\n'));
  process.exit(1);
}
