/**
 * TorchScript method sources shared by every network built from a spec (lib/torch/modules/spec.ts),
 * and the rules all sources in this project follow (the TiM network's lib/tim/network/sources.ts,
 * the VAEs' lib/vae/, the caption encoder's lib/text/), so that the same text compiles both through
 * libtorch's C++ `Module::define` (native resolver, `self` is a plain class value) and through
 * Python's `torch.jit.script` in the validation harness:
 * - only `torch.<aten op>` (e.g. torch.linear, torch.layer_norm, torch.silu) and Tensor methods; no
 *   `torch.nn.functional`, `math` or dtype constants (the native resolver maps `torch` to aten ops
 *   only), so numbers such as −ln(10000) are attributes;
 * - child modules are called as `self.child.forward(...)` and numbered children as
 *   `getattr(self, "0").forward(...)` (a C++-built module has no `__call__` and no ModuleList
 *   iteration);
 * - a method only calls methods that appear before it in its module's list, and children are built
 *   (with their methods) before their parent, so each string can be defined on its own, in order;
 * - every op is the one the reference PyTorch code runs (F.linear → aten::linear, nn.LayerNorm →
 *   aten::layer_norm, ...) in the same order, so float32 results match it to the last bit or nearly.
 * Structural options change the source text rather than branching at run time, because TorchScript
 * compiles both sides of an `if` and a missing submodule would not compile.
 */

/** How attention scores are computed: 'math' works on libtorch 1.13; 'sdpa' needs libtorch ≥ 2.0. */
export type AttentionImpl = 'math' | 'sdpa';

const lines = (...ls: string[]): string => ls.join('\n') + '\n';

export const LINEAR_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return torch.linear(x, self.weight, self.bias)'),
];

export const LINEAR_NO_BIAS_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return torch.linear(x, self.weight, None)'),
];
