// Builds the console into dist/ (which the daemon embeds): src/main.js and the CSS it imports bundled and
// minified by esbuild, and src/index.html copied. The output depends only on src/ and package-lock.json,
// so `node build.mjs --outdir DIR` can check that dist/ is what a fresh build gives (tests/console.rs does).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';

const at = process.argv.indexOf('--outdir');
const outdir = at > 0 ? process.argv[at + 1] : 'dist';
mkdirSync(outdir, { recursive: true });

await build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  outdir,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});
copyFileSync('src/index.html', join(outdir, 'index.html'));

let total = 0;
let zipped = 0;
for (const name of readdirSync(outdir).sort()) {
  const bytes = readFileSync(join(outdir, name));
  total += bytes.length;
  zipped += gzipSync(bytes, { level: 9 }).length;
  console.log(`${name.padEnd(12)} ${String(bytes.length).padStart(7)} bytes`);
}
console.log(`${'total'.padEnd(12)} ${String(total).padStart(7)} bytes (${zipped} gzipped)`);
