// The demo as an app people keep, in headless Chromium: the model picker (catalogue estimates, a second origin laid
// out like the Hugging Face Hub, a model folder or dropped files from this device), guidance (why Train is disabled,
// advice on short text, a message next to every wrong setting, a time estimate, a refused connection in the
// person's words), a chat model whose template shapes training and the compare view, the phone layout in light and
// dark, and installation and updates (the manifest and installability as Chromium reports them over CDP).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import { startServer } from '../../tools/serve.js';
import {
  DATA, checkPrerequisites, demoCopy, generateBoth, launch, newProfileDir, removeProfileDir, repoRoot, screenshot,
  settled, sharedDir, startHubServer, startTestServer, textMatching, watchErrors,
} from './helpers.js';

const TINY = 'trl-internal-testing/tiny-random-LlamaForCausalLM';
/** TinyLlama-Chat's turn format (<|user|>, <|assistant|>, eos_token after each turn), written without whitespace. */
const CHAT_TEMPLATE = "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}{% endfor %}"
  + "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

function chatTokenizerConfig() {
  const config = JSON.parse(readFileSync(path.join(sharedDir, DATA.llamaTokenizerConfig), 'utf8'));
  return JSON.stringify({ ...config, chat_template: CHAT_TEMPLATE });
}

/** Width and height of a PNG, from its IHDR chunk. @param {Buffer} png */
function pngSize(png) {
  expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
  return [png.readUInt32BE(16), png.readUInt32BE(20)];
}

describe('the demo as an app: models, guidance, chat, phones, installation', () => {
  let server;
  let hub;
  let demo;
  let profile;
  let browser;
  let page;
  let errors;
  let folder;

  beforeAll(async () => {
    checkPrerequisites();
    demo = demoCopy();
    server = await startTestServer({ codeMaxAge: 0, mounts: { '/demo/': demo.dir } });
    hub = await startHubServer({
      [TINY]: {
        'config.json': DATA.tinyLlamaConfig,
        'model.safetensors': DATA.tinyLlamaWeights,
        'tokenizer.json': DATA.llamaTokenizer,
        'tokenizer_config.json': { text: chatTokenizerConfig() },
      },
      'karpathy/tinyllamas': { 'stories260K/stories260K.bin': DATA.storiesBin, 'stories260K/tok512.bin': DATA.storiesTok },
    });
    // A model folder as a Hub download leaves it: the files the demo needs, and others it must leave alone. Copies
    // in a temporary folder, since a browser's folder picker does not follow links.
    folder = mkdtempSync(path.join(os.tmpdir(), 'weblora-model-folder-'));
    const model = path.join(folder, 'tiny-random-llama');
    mkdirSync(path.join(model, 'onnx'), { recursive: true });
    copyFileSync(path.join(sharedDir, DATA.tinyLlamaConfig), path.join(model, 'config.json'));
    copyFileSync(path.join(sharedDir, DATA.tinyLlamaWeights), path.join(model, 'model.safetensors'));
    copyFileSync(path.join(sharedDir, DATA.llamaTokenizer), path.join(model, 'tokenizer.json'));
    writeFileSync(path.join(model, 'README.md'), '# tiny random llama\n');
    writeFileSync(path.join(model, 'onnx/model.onnx'), 'not for this demo');
    profile = newProfileDir('demo-app');
    browser = await launch(profile);
    page = await browser.context.newPage();
    errors = watchErrors(page);
    await page.goto(server.url('/demo/'));
    await page.waitForFunction(() => document.body?.dataset.ready === 'true');
  }, 60_000);

  afterAll(async () => {
    await browser?.context.close().catch(() => {});
    await server?.close().catch(() => {});
    await hub?.close().catch(() => {});
    demo?.remove();
    removeProfileDir(profile);
    removeProfileDir(folder);
  });

  const field = (id) => page.locator(`#${id}-msg`);
  const chooseModel = (name) => page.getByRole('radio', { name }).check();
  const load = async () => {
    await page.getByRole('button', { name: 'Load the model' }).click();
    return settled(page, '#model-status');
  };

  test('before a model: why Train is disabled; the catalogue shows sizes, memory and measured speeds', async () => {
    expect(await page.locator('#train-why').textContent()).toBe('Load a model first (step 1).');
    expect(await page.getByRole('button', { name: 'Train', exact: true }).isDisabled()).toBe(true);
    expect(await page.locator('#generate-why').textContent()).toBe('Load a model first (step 1).');
    // The device's speed is measured once on the built-in model; the catalogue then estimates every model from it.
    await textMatching(page, '#speed-basis', /measured on this device \(Built-in model, \d+ threads?\)/);
    const smol = page.locator('#choice-smollm2-135m-about');
    await textMatching(page, '#choice-smollm2-135m-about', /tokens\/s training here/);
    // 134,515,008 parameters in bf16 plus the tokenizer: 271 MB, shown in MiB.
    expect(await smol.textContent()).toMatch(/135 M parameters · 259 MB download · about 1\.\d GB of memory to train \(batches of 8 × 64\)/);
    expect(await page.locator('#choice-qwen2\\.5-0\\.5b-instruct-about').textContent()).toMatch(/494 M parameters · 949 MB download/);
    // The same download held in 8 and 4 bits: the memory to train shrinks with the bytes per weight.
    const memoryOf = async (id) => {
      const text = await page.locator(`#choice-${id.replaceAll('.', '\\.')}-about`).textContent();
      const [, value, unit] = text.match(/about ([\d.]+) (MB|GB) of memory to train/);
      return Number(value) * (unit === 'GB' ? 1024 : 1);
    };
    const [f32, q8, q4] = [await memoryOf('qwen2.5-0.5b-instruct'), await memoryOf('qwen2.5-0.5b-instruct-q8'), await memoryOf('qwen2.5-0.5b-instruct-q4')];
    expect(await page.locator('#choice-qwen2\\.5-0\\.5b-instruct-q4-about').textContent()).toMatch(/494 M parameters · 949 MB download/);
    expect(f32 - q8).toBeGreaterThan(1000); // 494 M weights: 4 bytes each in f32, 1.125 in q8
    expect(q8 - q4).toBeGreaterThan(100); // and 0.75 in q4 (the 136 M of the embedding stay at 1.125)
    expect(await page.getByRole('radio', { name: 'SmolLM2 135M Instruct chat' }).count()).toBe(1);
  });

  test('a refused connection is reported at once, in the person\'s words, the probe only in the details', async () => {
    const gone = await startServer();
    const origin = gone.origin;
    await gone.close();
    await chooseModel('Another model on the web');
    await page.getByLabel('Model address or Hugging Face name').fill('not an address');
    await page.getByRole('button', { name: 'Load the model' }).click();
    expect(await field('model-address').textContent()).toBe('This is neither a web address nor a model name like HuggingFaceTB/SmolLM2-135M.');
    expect(await page.getByLabel('Model address or Hugging Face name').getAttribute('aria-invalid')).toBe('true');

    const from = browser.requests.length;
    await page.getByLabel('Model address or Hugging Face name').fill(`${origin}/org/model/resolve/main/`);
    const status = await load();
    expect(status.kind).toBe('error');
    const host = origin.replace('http://', '');
    expect(await page.locator('#model-status > strong').textContent()).toBe(`Could not reach ${host}.`);
    const visible = await page.locator('#model-status').evaluate((n) => [...n.childNodes].filter((c) => c.nodeName !== 'DETAILS').map((c) => c.textContent).join(''));
    expect(visible).toMatch(/Check the address and your connection/);
    expect(visible).not.toMatch(/index\.json|safetensors/);
    await page.locator('#model-status details summary').click();
    expect(await page.locator('#model-status details pre').textContent()).toMatch(new RegExp(`^NetworkError \\(UNREACHABLE\\): cannot reach ${host.replace(/\./g, '\\.')}`));
    // One quick retry, not five attempts with growing waits.
    expect(browser.requests.slice(from).filter((r) => r.url.startsWith(origin)).length).toBeLessThanOrEqual(2);
  });

  test('a catalogue model from a mirror in the Hub layout: what is missing is named in the person\'s words', async () => {
    await page.locator('#download-source summary').click();
    await page.getByLabel('Models in the list come from').fill(hub.url('/'));
    await page.getByLabel('Models in the list come from').press('Tab');
    await page.getByRole('radio', { name: 'SmolLM2 135M', exact: true }).check();
    const status = await load();
    expect(status.kind).toBe('error');
    expect(await page.locator('#model-status > strong').textContent()).toBe('There is no model at this address (config.json was not found).');
    expect(hub.requests.map((r) => r.path)).toContain('/HuggingFaceTB/SmolLM2-135M/resolve/main/config.json');
  });

  test('a chat model from a second origin: Hub layout, ranges, chat template in training and in the compare view', async () => {
    await chooseModel('Another model on the web');
    await page.getByLabel('Model address or Hugging Face name').fill(TINY);
    const loaded = await load();
    expect(loaded).toEqual({ kind: 'ok', text: expect.stringMatching(/tiny-random-LlamaForCausalLM: downloaded and ready/) });
    // From the other origin, by Range requests, with CORS: the weights' header first, then the tensors.
    const weights = hub.requests.filter((r) => r.path === `/${TINY}/resolve/main/model.safetensors` && r.method === 'GET');
    expect(weights.length).toBeGreaterThan(0);
    expect(weights.every((r) => r.status === 206 && /^bytes=\d+-\d*$/.test(r.range))).toBe(true);
    expect(hub.origin).not.toBe(server.origin);
    // The page is cross-origin isolated (COEP require-corp), and the Hub-like origin sends CORS only, no
    // Cross-Origin-Resource-Policy: the package's CORS fetches need nothing more.
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    const hubResponse = await fetch(hub.url(`/${TINY}/resolve/main/config.json`));
    expect([hubResponse.headers.get('access-control-allow-origin'), hubResponse.headers.get('cross-origin-resource-policy')]).toEqual(['*', null]);
    await textMatching(page, '#model-info', /Chat templateyes: it can answer messages/);
    await textMatching(page, '#cached-models', /tiny-random-LlamaForCausalLM [\d.]+ MB Remove/);
    await textMatching(page, '#train-estimate', /^Estimated time: about /);

    // Too little text: both warnings, in words.
    await page.getByLabel('Training text').fill('hi');
    await textMatching(page, '#text-advice', /shorter than one training sequence of 64 tokens/);
    expect(await page.locator('#text-advice').textContent()).toMatch(/With only 1 word \(\d+ tokens\) the adapter can only memorise this text/);

    // Every wrong setting gets its message next to the field; nothing is clamped; Train says why it waits.
    await page.getByLabel('Steps').fill('-3');
    await page.getByLabel('Learning rate').fill('0');
    await page.getByLabel('Sequence length').fill('99999');
    await page.getByLabel('Batch size').fill('0');
    await page.getByLabel('Tokens', { exact: true }).fill('0');
    await page.getByLabel('Temperature').fill('5');
    expect(await field('steps').textContent()).toBe('Steps must be a whole number from 1 to 5,000; -3 is outside that.');
    expect(await field('lr').textContent()).toBe('The learning rate must be above 0: at 0 the adapter learns nothing. 0.001 to 0.005 suits LoRA.');
    expect(await field('seq-len').textContent()).toBe('This model reads at most 2,048 tokens at a time: use a sequence length from 8 to 2,048.');
    expect(await field('batch-size').textContent()).toBe('Batch size must be a whole number from 1 to 64; 0 is outside that.');
    expect(await field('max-tokens').textContent()).toBe('Tokens must be a whole number from 1 to 512; 0 is outside that.');
    expect(await field('temperature').textContent()).toBe('Temperature must be a number from 0 to 2: 0 always picks the likeliest word, higher is more adventurous.');
    expect(await page.getByLabel('Steps').getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#train-why').textContent()).toBe('Fix the settings marked above: steps, learning rate, sequence length, batch size.');
    expect(await page.getByRole('button', { name: 'Train', exact: true }).isDisabled()).toBe(true);
    expect(await page.locator('#generate-why').textContent()).toBe('Fix the setting marked above.');
    await page.getByLabel('Steps').fill('');
    expect(await field('steps').textContent()).toBe('Enter steps: a whole number from 1 to 5,000 (for example 100).');
    await page.getByLabel('Learning rate').fill('0.5');
    expect(await field('lr').textContent()).toMatch(/^A learning rate above 0\.05 makes training unstable/);
    // Memory: a batch that no browser tab can hold is refused with the longest length that fits.
    await page.getByLabel('Batch size').fill('64');
    await page.getByLabel('Sequence length').fill('2048');
    expect(await field('seq-len').textContent()).toMatch(/^Training batches of 64 × 2,048 tokens needs about [\d.]+ GB, more than a browser tab can use \(4\.0 GB\): use a sequence length of at most [\d,]+, or a smaller batch size\.$/);

    await page.getByLabel('Steps').fill('3');
    await page.getByLabel('Learning rate').fill('0.01');
    await page.getByLabel('Sequence length').fill('16');
    await page.getByLabel('Batch size').fill('2');
    await page.getByLabel('Tokens', { exact: true }).fill('8');
    await page.getByLabel('Temperature').fill('0');
    for (const id of ['steps', 'lr', 'seq-len', 'batch-size', 'max-tokens', 'temperature']) expect(await field(id).textContent()).toBe('');
    expect(await page.locator('#train-why').textContent()).toBe('');

    // Entries become conversations through the model's own template; an entry may bring its own question.
    await page.getByLabel('Training text').fill('> What did you see today?\nGulls over the harbour, and the lamp lit at dusk.\n\nWind from the west. Tea at six.');
    await page.locator('#chat-format details summary').click();
    await textMatching(page, '#chat-preview', /Gulls/);
    expect(await page.locator('#chat-preview').textContent()).toBe('<|user|>\nWhat did you see today?</s><|assistant|>\nGulls over the harbour, and the lamp lit at dusk.</s>');
    await textMatching(page, '#train-estimate', /^Estimated time: about /);
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    expect(await settled(page, '#train-status')).toEqual({ kind: 'ok', text: expect.stringMatching(/^Training finished: 3 steps/) });
    await textMatching(page, '#speed', /tokens\/s on \d+ threads?$/);

    await page.getByLabel('Message', { exact: true }).fill('Hello there');
    const out = await generateBoth(page);
    expect(out.base.length).toBeGreaterThan(0);
    expect(await page.locator('#prompt-preview').textContent()).toBe('<|user|>\nHello there</s><|assistant|>\n');

    // Saving the first adapter asks the browser to keep the site's data, and says why and what it answered.
    await page.getByLabel('Name', { exact: true }).fill('harbour');
    await page.getByRole('button', { name: 'Save the current adapter' }).click();
    await settled(page, '#adapters-status', /^Saved "harbour"/);
    await textMatching(page, '#persist-note', /Browsers may clear|protected|did not agree/);
    await textMatching(page, '#persist-note', /Your adapters are protected|did not agree to protect/);
    expect(await page.locator('#adapters-body td[data-label="Trained layers"]').textContent()).toBe('all linear');
  });

  test('phone and desktop, light and dark: no sideways scrolling, compact adapter rows', async () => {
    for (const width of [390, 360]) {
      await page.setViewportSize({ width, height: 844 });
      await page.waitForFunction((w) => document.documentElement.scrollWidth <= w, width, { timeout: 5000 }).catch(() => {});
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(width);
    }
    await page.setViewportSize({ width: 390, height: 844 });
    // The trained layers of an adapter stay on one line (they once wrapped over five).
    const lines = await page.locator('#adapters-body td[data-label="Trained layers"]').evaluate((td) => td.getBoundingClientRect().height / parseFloat(getComputedStyle(td).lineHeight));
    expect(lines).toBeLessThan(2);
    // Every control is reachable and named: no unlabeled inputs.
    const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
      .filter((el) => !el.closest('[hidden]') && el.type !== 'hidden')
      .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || (el.tagName === 'BUTTON' && el.textContent.trim())))
      .map((el) => el.id || el.outerHTML.slice(0, 60)));
    expect(unlabeled).toEqual([]);
    await screenshot(page, 'demo-phone-light');
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(20, 23, 27)');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'demo-phone-dark');
    await page.setViewportSize({ width: 1280, height: 900 });
    await screenshot(page, 'demo-desktop-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await screenshot(page, 'demo-desktop-light');
  });

  test('downloaded models are listed with their size and can be removed; a .bin with its tokenizer from the mirror', async () => {
    const remove = page.getByRole('button', { name: /^Remove .*tiny-random-LlamaForCausalLM$/ });
    await remove.click();
    await remove.click();
    expect(await settled(page, '#model-status', /^Removed/)).toEqual({
      kind: 'ok', text: expect.stringMatching(/^Removed .*tiny-random-LlamaForCausalLM \(4 files\)\. It stays loaded in this tab; it downloads again next time\.$/),
    });
    await page.waitForFunction(() => !document.getElementById('cached-models').textContent.includes('tiny-random'));

    await page.getByLabel('Model address or Hugging Face name').fill(hub.url('/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin'));
    await page.getByLabel(/^Tokenizer address/).fill(hub.url('/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin'));
    expect(await load()).toEqual({ kind: 'ok', text: expect.stringMatching(/stories260K\.bin: downloaded and ready/) });
    await textMatching(page, '#model-info', /llama, 5 layers, width 64/);
    expect(await page.locator('#chat-format').isHidden()).toBe(true);
    expect(await page.locator('#prompt-label').textContent()).toBe('Prompt');
  });

  test('a model folder from this device, chosen or dropped; files it cannot use are left out', async () => {
    await chooseModel('Model files on this device');
    await page.locator('#model-folder').setInputFiles(path.join(folder, 'tiny-random-llama'));
    expect(await page.locator('#model-files-msg').textContent()).toMatch(/^folder “tiny-random-llama”: config\.json, model\.safetensors, tokenizer\.json \(5\.7 MB\)\.$/);
    expect(await load()).toEqual({ kind: 'ok', text: 'folder “tiny-random-llama”: ready (from this device).' });
    await textMatching(page, '#model-info', /llama, 2 layers, width 16/);

    const files = await page.evaluateHandle(async (urls) => {
      const dt = new DataTransfer();
      for (const [name, url] of Object.entries(urls)) dt.items.add(new File([await (await fetch(url)).blob()], name));
      return dt;
    }, {
      'config.json': server.shared(DATA.tinyLlamaConfig),
      'model.safetensors': server.shared(DATA.tinyLlamaWeights),
      'tokenizer.json': server.shared(DATA.llamaTokenizer),
    });
    await page.dispatchEvent('#model-drop', 'drop', { dataTransfer: files });
    await textMatching(page, '#model-files-msg', /^3 dropped files: config\.json, model\.safetensors, tokenizer\.json/);
    expect(await load()).toEqual({ kind: 'ok', text: '3 dropped files: ready (from this device).' });
  });

  test('installable: Chromium parses the manifest and finds no installability error; the service worker is in control', async () => {
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30_000 });
    const cdp = await browser.context.newCDPSession(page);
    const manifest = await cdp.send('Page.getAppManifest');
    expect(manifest.errors).toEqual([]);
    expect(manifest.url).toBe(server.url('/demo/manifest.webmanifest'));
    const parsed = JSON.parse(manifest.data);
    const icons = parsed.icons.filter((i) => i.type === 'image/png');
    expect(icons.map((i) => `${i.sizes} ${i.purpose}`).sort()).toEqual(['192x192 any', '512x512 any', '512x512 maskable']);
    for (const icon of icons) {
      const [w, h] = pngSize(readFileSync(path.join(repoRoot, 'demo', icon.src)));
      expect(`${w}x${h}`).toBe(icon.sizes);
    }
    const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
    expect(installabilityErrors).toEqual([]);
    // Chromium offers installation (beforeinstallprompt), and the page turns that into its own button.
    await page.getByRole('button', { name: 'Install the app' }).waitFor({ timeout: 20_000 });
  });

  test('an update: the new service worker waits, the page offers a reload, and the reload runs the new version', async () => {
    demo.editServiceWorker((text) => text.replace(/const VERSION = '([^']+)';/, "const VERSION = '$1-next';"));
    const oldCache = await page.evaluate(async () => (await caches.keys()).find((n) => n.startsWith('weblora-demo-shell-')));
    await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()).update());
    await page.getByRole('button', { name: 'Reload to update' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('#update-banner').textContent()).toMatch(/A new version of the demo is ready/);
    await Promise.all([page.waitForEvent('load', { timeout: 30_000 }), page.getByRole('button', { name: 'Reload to update' }).click()]);
    await page.waitForFunction(() => document.body?.dataset.ready === 'true');
    const caches = await page.evaluate(async () => (await caches.keys()).filter((n) => n.startsWith('weblora-demo-shell-')));
    expect(caches).toEqual([`${oldCache}-next`]);
    expect(await page.locator('#update-banner').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });
});
