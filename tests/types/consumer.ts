// An app written in TypeScript against the package's declarations (web/index.d.ts, through package.json "exports"):
// it must type-check as it is, and each @ts-expect-error line must be an error, or tsc fails.
import { WebLoRA, env, NotFoundError, type Engine, type LoadOptions, type ProgressEvent, type TextSource } from 'weblora';

env.remoteHost = 'https://mirror.example/hf/';

const options: LoadOptions = {
  revision: 'main',
  remoteHost: new URL('https://huggingface.co/'),
  revalidate: 'online',
  threads: 'auto',
  wasmUrl: '/assets/weblora/',
  workerUrl: new URL('/assets/weblora/worker.js', 'https://app.example/'),
  sha256: { 'model.safetensors': 'ab'.repeat(32) },
  onProgress: (event: ProgressEvent) => {
    if (event.status === 'progress') console.log(event.file, event.loaded / event.total);
  },
};

export async function run(): Promise<string> {
  try {
    const engine = await WebLoRA.load('HuggingFaceTB/SmolLM2-135M', options);
    const relative = await WebLoRA.load('./models/tiny/', { revalidate: 'never' });
    await relative.dispose();
    return engine.info.name;
  } catch (err) {
    if (err instanceof NotFoundError) return 'no model there';
    throw err;
  }
}

export async function fineTune(engine: Engine, file: Blob): Promise<number> {
  const adapter = await engine.createAdapter({ rank: 8, init: 'pissa_fast', pissaIters: 2 });
  const texts: TextSource[] = ['one document', file, { path: 'corpus.jsonl' }];
  const run = engine.train(adapter, texts, { steps: 10, recompute: true, onTokenize: (p) => console.log(p.file, p.loaded / p.total) });
  await run.done;
  return (await engine.countTokens(file)).tokens;
}

export async function mistakes(engine: Engine): Promise<void> {
  // @ts-expect-error pissaIters is a number
  await engine.createAdapter({ init: 'pissa_fast', pissaIters: '2' });
  // @ts-expect-error a text source is a string, a Blob or { path }
  engine.train(null, [{ file: 'corpus.txt' }]);
  // @ts-expect-error a misspelt option name is refused
  await WebLoRA.load('org/model', { revalidte: 'never' });
  // @ts-expect-error revalidate takes 'online' or 'never'
  await WebLoRA.load('org/model', { revalidate: 'always' });
  // @ts-expect-error threads is a number or 'auto'
  await WebLoRA.load('org/model', { threads: 'many' });
  // @ts-expect-error remoteHost is a URL or its text
  env.remoteHost = 42;
}
