// Static .wasm imports: wrangler and the vitest plugin hand them over as compiled modules
// (workerd refuses to compile WebAssembly from bytes at run time).
declare module "*.wasm" {
  const module: WebAssembly.Module;
  export default module;
}
