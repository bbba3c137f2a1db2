// Builds the browser client into sipim/web/static/ (served by sipim at /):
// app.js (this client and JsSIP, bundled), app.css, index.html.
// index.html is written last: its time stamp says the bundle is complete.
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'sipim', 'web', 'static');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  minify: true,
  sourcemap: 'linked',
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  legalComments: 'linked',
  outfile: join(out, 'app.js'),
  logLevel: 'warning',
});
await copyFile(join(here, 'src', 'style.css'), join(out, 'app.css'));
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'));
console.log(`web client built into ${out}`);
