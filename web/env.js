// env.js: settings that apply to every load, as transformers.js's `env` (set them once, before loading).

export const env = {
  /**
   * Where a Hugging Face id ('HuggingFaceTB/SmolLM2-135M') is fetched from: the Hub, or a mirror laid out like it
   * (<remoteHost>/<org>/<name>/resolve/<revision>/<file>). load()'s remoteHost option overrides it for one load.
   */
  remoteHost: 'https://huggingface.co/',
};
