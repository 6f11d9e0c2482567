// vendor.js: copies the ES modules of the package's runtime libraries (idb, @noble/hashes, @huggingface/tokenizers,
// @huggingface/jinja) from node_modules into web/vendor/, so web/ imports them by relative path and runs in a browser
// without a bundler or an import map (import maps do not reach module Workers). Files are copied unchanged except
// that a library's imports of its own package by name are pointed at the copied file. Each library's licence is
// copied beside it.
// Run by tools/setup.sh and before packing; web/vendor/ is generated, not committed.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outRoot = path.join(root, 'web/vendor');

const LIBRARIES = [
  { name: 'idb', dir: 'idb', entries: ['build/index.js'] },
  { name: '@noble/hashes', dir: 'noble-hashes', entries: ['esm/sha2.js', 'esm/utils.js'] },
  { name: '@huggingface/tokenizers', dir: 'tokenizers', entries: ['dist/tokenizers.mjs'] },
  { name: '@huggingface/jinja', dir: 'jinja', entries: ['dist/index.js'] },
];

const IMPORT = /(\bfrom\s*|\bimport\s*\(?\s*)(['"])([^'"]+)\2/g;

/** The file a package-internal bare specifier ('@noble/hashes/crypto') names, through the package's exports map. */
function resolveSelf(pkgDir, pkg, specifier) {
  const sub = `.${specifier.slice(pkg.name.length)}`;
  const entry = pkg.exports?.[sub] ?? pkg.exports?.[`${sub}.js`];
  const target = typeof entry === 'string' ? entry : entry?.import ?? entry?.default;
  if (!target) throw new Error(`${pkg.name}: cannot resolve ${specifier} through its exports map`);
  return path.join(pkgDir, target);
}

function vendor(lib) {
  const pkgDir = path.join(root, 'node_modules', lib.name);
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  const outDir = path.join(outRoot, lib.dir);
  const queue = lib.entries.map((e) => path.join(pkgDir, e));
  const done = new Set();
  while (queue.length) {
    const file = queue.pop();
    if (done.has(file)) continue;
    done.add(file);
    let text = readFileSync(file, 'utf8');
    text = text.replace(IMPORT, (all, head, quote, spec) => {
      let target;
      if (spec.startsWith('./') || spec.startsWith('../')) target = path.resolve(path.dirname(file), spec);
      else if (spec === pkg.name || spec.startsWith(`${pkg.name}/`)) target = resolveSelf(pkgDir, pkg, spec);
      else throw new Error(`${path.relative(root, file)} imports ${spec}, which is not part of ${pkg.name}`);
      queue.push(target);
      let rel = path.relative(path.dirname(file), target).split(path.sep).join('/');
      if (!rel.startsWith('.')) rel = `./${rel}`;
      return `${head}${quote}${rel}${quote}`;
    });
    const out = path.join(outDir, path.relative(pkgDir, file));
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, text);
  }
  for (const name of ['LICENSE', 'LICENSE.md', 'LICENSE.txt']) {
    if (existsSync(path.join(pkgDir, name))) copyFileSync(path.join(pkgDir, name), path.join(outDir, name));
  }
  writeFileSync(path.join(outDir, 'VERSION'), `${pkg.name}@${pkg.version}\n`);
  return done.size;
}

rmSync(outRoot, { recursive: true, force: true });
for (const lib of LIBRARIES) {
  const n = vendor(lib);
  process.stderr.write(`vendored ${lib.name} (${n} file${n > 1 ? 's' : ''}) into web/vendor/${lib.dir}\n`);
}
