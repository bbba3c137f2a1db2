// Builds the browser client into sipim/web/static/ (served by sipim at /):
// app.js (this client and JsSIP, bundled), app.css, index.html.
// index.html is written last: its time stamp says the bundle is complete.
import { build } from 'esbuild';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'sipim', 'web', 'static');

// Build beside the served folder and swap it in, so a running server never
// serves half a bundle.
const fresh = `${out}.new-${process.pid}`;
const previous = `${out}.old-${process.pid}`;
await rm(fresh, { recursive: true, force: true });
await mkdir(fresh, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  minify: true,
  sourcemap: 'linked',
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  legalComments: 'linked',
  outfile: join(fresh, 'app.js'),
  logLevel: 'warning',
});
await copyFile(join(here, 'src', 'style.css'), join(fresh, 'app.css'));
await copyFile(join(here, 'src', 'index.html'), join(fresh, 'index.html'));
await rename(out, previous).catch((error) => { if (error.code !== 'ENOENT') throw error; });
await rename(fresh, out);
await rm(previous, { recursive: true, force: true });
console.log(`web client built into ${out}`);
