// What the guide's LiveStreamPlayer touches in a page: a canvas, Image (JPEG data URLs),
// AudioContext (it plays each audio_frame as one buffer); each records what it was given.

function jpegSize(bytes) {
  // SOI, then segments until a start-of-frame marker (SOF0..SOF15 but DHT, JPG, DAC)
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return null;
    const marker = bytes[i + 1];
    const length = (bytes[i + 2] << 8) | bytes[i + 3];
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { height: (bytes[i + 5] << 8) | bytes[i + 6], width: (bytes[i + 7] << 8) | bytes[i + 8] };
    }
    i += 2 + length;
  }
  return null;
}

export function makePage() {
  const page = { drawn: [], badImages: 0, buffers: [], played: 0 };

  class Image {
    set src(url) {
      const prefix = 'data:image/jpeg;base64,';
      const size = url.startsWith(prefix) ? jpegSize(Buffer.from(url.slice(prefix.length), 'base64')) : null;
      setImmediate(() => {
        if (size) {
          Object.assign(this, size);
          this.onload && this.onload();
        } else {
          page.badImages += 1;
          this.onerror && this.onerror(new Error('not a JPEG'));
        }
      });
    }
  }
  const ctx = {
    clearRect() {},
    drawImage(img) {
      page.drawn.push({ width: img.width, height: img.height });
    },
  };
  const canvas = { width: 640, height: 480, getContext: () => ctx };
  const document = { getElementById: (id) => (id === 'videoCanvas' ? canvas : null) };

  class AudioContext {
    constructor() {
      this.destination = {};
    }
    createBuffer(channels, length, sampleRate) {
      const data = Array.from({ length: channels }, () => new Float32Array(length));
      const buffer = { numberOfChannels: channels, length, sampleRate, getChannelData: (i) => data[i] };
      page.buffers.push(buffer);
      return buffer;
    }
    createBufferSource() {
      return { buffer: null, connect() {}, start() { page.played += 1; } };
    }
  }
  Object.assign(globalThis, { Image, document, AudioContext });
  return page;
}

// The tone's pitch as the page plays it. The player plays each audio_frame's bytes as
// samples at the rate it gives createBuffer; its own decoding does not sign-extend (a negative
// sample becomes +1 after its clamp, whatever the backend sends), so the pitch is measured on
// the bytes it was given, read as s16le, and timed at that declared rate: the upward zero
// crossings of the tone (where the signal around them is loud), periods between the first and
// the last in each message.
export function toneHz(messages, declaredRate) {
  let periods = 0;
  let seconds = 0;
  for (const m of messages) {
    const bytes = Buffer.from(m.data, 'base64');
    const x = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1);
    const at = [];
    for (let i = 1; i < x.length; i++) {
      if (!(x[i - 1] < 0 && x[i] >= 0)) continue;
      let peak = 0;
      for (let j = Math.max(0, i - 30); j < Math.min(x.length, i + 30); j++) peak = Math.max(peak, Math.abs(x[j]));
      if (peak > 0.2 * 32768) at.push(i);
    }
    if (at.length < 3) continue;
    periods += at.length - 1;
    seconds += (at[at.length - 1] - at[0]) / declaredRate;
  }
  return { hz: seconds > 0 ? periods / seconds : null, seconds };
}
