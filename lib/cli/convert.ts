/**
 * `tim convert <in> <out>`: re-saves a TiM checkpoint in another format. The input is loaded as a
 * model (so its keys and shapes are checked against its config's architecture) and written by
 * TiM.save: .safetensors (official state dict + config metadata), .pt (TorchScript, loads in
 * Python's torch.jit.load) or .bin (torch.save state dict).
 */
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { TiM, checkpointKind, torchScriptRefused } from '../tim/network/index.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const CONVERT: CommandSpec = {
  name: 'convert',
  brief: 'convert a checkpoint between .safetensors, .bin and .pt',
  summary: 'Convert a TiM checkpoint between .safetensors, .bin (torch.save state dict) and .pt (TorchScript).',
  usage: '<in> <out>',
  positionals: [2, 2],
  details: [
    'The output format follows the extension of <out>. A state dict without a config (no safetensors',
    'metadata, no sidecar <name>.json/.yaml or config.json/.yaml) needs --config.',
    'A TorchScript archive (a .pt saved by tim, whatever the input is named) is code that runs when it loads: it is',
    'refused unless --allow-torchscript says you trust it (docs/security.md).',
  ].join('\n'),
  options: {
    config: { value: true, arg: 'preset|file', help: 'network config: official YAML/JSON, network.params JSON, or a preset' },
    key: { value: true, arg: 'name', help: 'torch.save checkpoint: load the dict under this top-level key (e.g. ema)' },
    'non-strict': { value: false, help: 'allow missing/unexpected keys (listed on stderr; missing ones keep the official init)' },
    'allow-torchscript': { value: false, help: 'the input may be a TorchScript archive: runs its code (only for files you trust)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};

const OUT_FORMATS = /\.(safetensors|pt|pth|bin)$/i;

export function runConvert(p: Parsed, print: (s: string) => void, warn: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): number {
  const [input, output] = p.positionals as [string, string];
  if (!OUT_FORMATS.test(output)) throw new UsageError(`cannot tell the output format of '${output}': use .safetensors, .bin or .pt`, 'convert');
  if (resolve(input) === resolve(output)) throw new UsageError('<in> and <out> are the same file', 'convert');
  const allowTorchScript = p.options['allow-torchscript'] === true;
  if (!allowTorchScript && existsSync(input) && checkpointKind(input) === 'torchscript') throw torchScriptRefused(input, 'tim convert', '--allow-torchscript');
  const t0 = Date.now();
  using model = TiM.load(input, {
    config: p.options.config as string | undefined,
    key: p.options.key as string | undefined,
    strict: !p.options['non-strict'],
    allowTorchScript,
  });
  const rep = model.loadReport;
  if (rep && (rep.missingKeys.length || rep.unexpectedKeys.length)) {
    const list = (ks: string[]) => ks.slice(0, 50).join(', ') + (ks.length > 50 ? `, ... (+${ks.length - 50} more)` : '');
    if (rep.missingKeys.length) warn(`tim convert: ${rep.missingKeys.length} missing key(s), left at the official init: ${list(rep.missingKeys)}`);
    if (rep.unexpectedKeys.length) warn(`tim convert: ${rep.unexpectedKeys.length} unexpected key(s), not converted: ${list(rep.unexpectedKeys)}`);
  }
  model.save(output);
  const n = model.numParameters();
  print(`${input} -> ${output}: ${model.config.variant.toUpperCase()} TiM, ${n.toLocaleString('en-US')} parameters (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return 0;
}
