// Haven Player's useRecording hook, rendered by react-test-renderer the way its
// LivestreamCard uses it: one click starts (session, then recording), the hook polls the
// status every second, another click stops (recording, then session).
import React from 'react';
import TestRenderer from 'react-test-renderer';
import { sleep, waitFor } from './browser.mjs';

globalThis.IS_REACT_ACT_ENVIRONMENT = false; // real timers and real I/O: no act() batching

export async function renderHook(useRecording, mintId) {
  const renders = [];
  const probe = { current: null, renders };
  function Card({ mint }) {
    const state = useRecording(mint);
    probe.current = state;
    renders.push({
      t: Date.now(),
      isRecording: state.isRecording,
      duration: state.duration,
      error: state.error,
      isLoading: state.isLoading,
    });
    return null;
  }
  probe.renderer = TestRenderer.create(React.createElement(Card, { mint: mintId }));
  return probe;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// start, poll until the hook shows `seconds` of recording, stop; the hook's own state is
// checked at every render in between
export async function recordWithHook(probe, { seconds, log }) {
  const from = probe.renders.length;
  await probe.current.startRecording();
  check(probe.current.error === null, `start: the hook shows an error: ${probe.current.error}`);
  check(probe.current.isRecording === true, 'start: the hook does not show recording');
  const started = probe.renders.length;
  const polls = () => log.filter((e) => e.url.includes('/recording/status/')).length;
  const pollsBefore = polls();
  await waitFor(`the hook to show ${seconds}s recorded`, () => probe.current.duration >= seconds, {
    timeout: 180000,
  });
  for (const r of probe.renders.slice(started)) {
    check(r.isRecording === true, `while recording the hook showed "Ready to Record" (${JSON.stringify(r)})`);
    check(r.error === null, `while recording the hook showed an error: ${r.error}`);
    check(Number.isFinite(r.duration), `duration is not a number: ${r.duration}`);
  }
  const pollCount = polls() - pollsBefore;
  check(pollCount >= 1, 'the hook never polled the status');
  await probe.current.stopRecording();
  check(probe.current.error === null, `stop: the hook shows an error: ${probe.current.error}`);
  check(probe.current.isRecording === false, 'stop: the hook still shows recording');
  await sleep(1500); // no poll may bring "recording" back after the stop
  check(probe.current.isRecording === false, 'after stop a poll showed recording again');
  const shown = probe.renders.slice(from).map((r) => r.duration);
  return { polls: pollCount, maxDuration: Math.max(...shown), renders: probe.renders.length - from };
}
