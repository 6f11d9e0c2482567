// bundle.js: the package's no-bundler build, dist/: the page's entry (weblora.js), the engine's worker (worker.js),
// the core's thread (thread.js) and the in-thread engine (engine.js) as self-contained ES modules made with esbuild from web/ and the runtime
// dependencies, next to every build of the core (web/runtime/*.wasm). A page loads dist/weblora.js with
// <script type="module"> from a static folder or a CDN; the modules find the rest beside themselves
// (new URL('./worker.js', import.meta.url)). Bundlers use web/ instead. No source maps: nothing points at files
// that are not shipped. The bundled libraries' licences go to dist/LICENSES.txt.
// Also dist/embedded-data.js, what web/runtime/embedded.js carries for bundlers that emit no files for
// `new URL('./x', import.meta.url)` (esbuild, Rollup): the thread script as one minified module, every build of the
// core gzip-compressed in base64, and the engine's worker as one minified module whose own copy of embedded.js reads
// those two from a constant the page puts before it (HANDOVER), so that each is carried once.
// Run by tools/build.sh dist (after wasm) and before packing; dist/ is generated, not committed.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
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

/** The browser build must not reach for Node, nor for maps it does not carry. @param {string} name @param {string} text */
function checkBrowserCode(name, text) {
  if (/\bfrom\s*["']node:|import\(\s*["']node:/.test(text)) throw new Error(`${name} imports a node: module`);
  if (/sourceMappingURL=/.test(text)) throw new Error(`${name} points at a source map`);
}

/** The constant the engine's carried worker reads the thread script and the core builds from (web/runtime/embedded.js). */
const HANDOVER = '__webloraCarried';

/** The module web/runtime/embedded.js reads its data from (#embedded-data). @param {{ WORKER: string, THREAD: string, CORES: Record<string, string> }} data */
const embeddedData = ({ WORKER, THREAD, CORES }) => `export const HANDOVER = ${JSON.stringify(HANDOVER)};\n`
  + `export const WORKER = ${JSON.stringify(WORKER)};\n`
  + `export const THREAD = ${JSON.stringify(THREAD)};\n`
  + `export const CORES = {\n${Object.entries(CORES).map(([file, data]) => `  ${JSON.stringify(file)}: ${JSON.stringify(data)},\n`).join('')}};\n`;

/**
 * One of web/'s Worker scripts as a self-contained, minified module whose #assets is web/runtime/embedded.js over the data
 * module given: the scripts a bundle starts from blob: URLs.
 * @param {string} entry @param {string} data the text of its #embedded-data
 */
async function embeddedScript(entry, data) {
  const out = await build({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'eof',
    logLevel: 'warning',
    plugins: [{
      name: 'weblora-embedded',
      setup(b) {
        b.onResolve({ filter: /^#assets$/ }, () => ({ path: path.join(runtime, 'embedded.js') }));
        b.onResolve({ filter: /^#embedded-data$/ }, () => ({ path: 'embedded-data', namespace: 'weblora-embedded' }));
        b.onLoad({ filter: /.*/, namespace: 'weblora-embedded' }, () => ({ contents: data, loader: 'js' }));
      },
    }],
  });
  const text = out.outputFiles[0].text;
  checkBrowserCode(`the embedded ${entry}`, text);
  return text;
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
  // #assets: the Worker scripts and core builds are the files beside these modules (package.json "imports").
  conditions: ['weblora-files', 'module'],
  target: 'es2022',
  splitting: false,
  sourcemap: false,
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
  banner: { js: `// weblora ${JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version}: built from web/ by tools/bundle.js` },
});
for (const file of Object.keys(result.metafile.outputs)) checkBrowserCode(file, readFileSync(path.join(root, file), 'utf8'));
for (const core of cores) copyFileSync(path.join(runtime, core), path.join(dist, core));

// The embedded builds: the thread script first, which the engine's worker carries with the cores.
const CORES = Object.fromEntries(cores.sort().map((core) => [core, gzipSync(readFileSync(path.join(runtime, core)), { level: 9 }).toString('base64')]));
const THREAD = await embeddedScript('web/runtime/thread.js', embeddedData({ WORKER: '', THREAD: '', CORES: {} }));
const WORKER = await embeddedScript('web/runtime/worker.js', `export const HANDOVER = ${JSON.stringify(HANDOVER)};\nexport const WORKER = '';\n`
  + `export const { THREAD, CORES } = ${HANDOVER};\n`);
if (!WORKER.includes(HANDOVER)) throw new Error(`the embedded worker does not read ${HANDOVER}`);
writeFileSync(path.join(dist, 'embedded-data.js'), '// What web/runtime/embedded.js carries: made by tools/bundle.js from web/ and the builds of the core.\n'
  + embeddedData({ WORKER, THREAD, CORES }));

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
process.stderr.write(`bundled ${Object.keys(ENTRIES).length} modules, ${cores.length} core builds, the embedded worker (${WORKER.length} bytes) `
  + `and ${packages.size} libraries' licences into dist/\n`);
