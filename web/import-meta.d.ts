// import.meta.env: defined by Vite at build time (assets-auto.js tells Vite's builds from others' by it).
interface ImportMeta {
  readonly env?: { readonly MODE?: string };
}
