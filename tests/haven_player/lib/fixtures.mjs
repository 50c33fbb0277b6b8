// The upstream files in fixtures/ are kept verbatim; this compiles a TypeScript one to
// CommonJS with esbuild (types stripped, nothing else changed) under .build/, where `react`
// and `axios` resolve from this folder's node_modules, and loads it.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);

export async function load(relative) {
  const source = path.join(HERE, 'fixtures', relative);
  const outfile = path.join(HERE, '.build', relative.replace(/\.tsx?$/, '.cjs'));
  await build({
    entryPoints: [source],
    outfile,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    bundle: false,
    logLevel: 'error',
  });
  return require(outfile);
}

export function read(relative) {
  return readFileSync(path.join(HERE, 'fixtures', relative), 'utf8');
}

// The guide's `LiveStreamPlayer`: the class as the guide's "Complete Integration Example"
// block has it, from `class LiveStreamPlayer {` to the `}` that closes it, evaluated as is.
export function guidePlayer(relative) {
  const guide = read(relative);
  const start = guide.indexOf('class LiveStreamPlayer {');
  if (start < 0) throw new Error(`no LiveStreamPlayer in ${relative}`);
  const end = guide.indexOf('\n}\n', start);
  const source = guide.slice(start, end + 2);
  return new Function(`${source}\nreturn LiveStreamPlayer;`)();
}
