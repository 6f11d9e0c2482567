// bundle.js: the package's no-bundler build, dist/: the page's entry (weblora.js), the engine's worker (worker.js),
// the core's thread (thread.js) and the in-thread engine (engine.js) as self-contained ES modules made with esbuild from web/ and the runtime
// dependencies, next to every build of the core (web/runtime/*.wasm). A page loads dist/weblora.js with
// <script type="module"> from a static folder or a CDN; the modules find the rest beside themselves
// (new URL('./worker.js', import.meta.url)). Bundlers use web/ instead. No source maps: nothing points at files
// that are not shipped. The bundled libraries' licences go to dist/LICENSES.txt.
// Run by tools/build.sh dist (after wasm) and before packing; dist/ is generated, not committed.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The builds of the core sit beside web/runtime/wasm.js, which finds them by new URL('./…', import.meta.url).
const runtime = path.join(root, 'web/runtime');
const dist = path.join(root, 'dist');
// The page's entry, the in-thread engine (package.json's "./engine"), and the two worker scripts they start.
const ENTRIES = { weblora: 'web/index.js', engine: 'web/engine/engine.js', worker: 'web/runtime/worker.js', thread: 'web/runtime/thread.js' };

const cores = readdirSync(runtime).filter((f) => f.endsWith('.wasm'));
for (const core of ['weblora.wasm', 'weblora-threads.wasm', 'weblora-relaxed.wasm', 'weblora-relaxed-threads.wasm']) {
  if (!cores.includes(core)) throw new Error(`web/runtime/${core} is missing: run sh tools/build.sh wasm first`);
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: Object.entries(ENTRIES).map(([out, input]) => ({ in: input, out })),
  outdir: dist,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  splitting: false,
  sourcemap: false,
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
  banner: { js: `// weblora ${JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version}: built from web/ by tools/bundle.js` },
});
for (const file of Object.keys(result.metafile.outputs)) {
  const text = readFileSync(path.join(root, file), 'utf8');
  // The browser build must not reach for Node, nor for maps it does not carry.
  if (/\bfrom\s*["']node:|import\(\s*["']node:/.test(text)) throw new Error(`${file} imports a node: module`);
  if (/sourceMappingURL=/.test(text)) throw new Error(`${file} points at a source map`);
}
for (const core of cores) copyFileSync(path.join(runtime, core), path.join(dist, core));

// The licences of everything bundled from node_modules.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) packages.add(m[1]);
}
const notices = [];
for (const name of [...packages].sort()) {
  const dir = path.join(root, 'node_modules', name);
  const { version, license } = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const file = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license'].map((f) => path.join(dir, f)).find(existsSync);
  if (!file) throw new Error(`${name} has no licence file to ship with dist/`);
  notices.push(`${name}@${version} (${license})\n\n${readFileSync(file, 'utf8').trim()}\n`);
}
writeFileSync(path.join(dist, 'LICENSES.txt'), `Libraries bundled into weblora's dist/ build:\n\n${notices.join('\n---\n\n')}`);
process.stderr.write(`bundled ${Object.keys(ENTRIES).length} modules, ${cores.length} core builds and ${packages.size} libraries' licences into dist/\n`);
