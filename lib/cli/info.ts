/**
 * `tim info <preset|file>`: the configuration and the parameter count of each part of a TiM
 * network. For a preset (or --config alone) the counts come from the spec's shapes, with nothing
 * allocated; for a checkpoint they come from the file's tensors (safetensors: from the header
 * alone) and are checked against its config's architecture when a config is known.
 */
import * as torch from '../torch/index.js';
import {
  TiM, checkpointConfig, checkpointKind, torchScriptRefused, parameterCounts, resolveConfig, resolvePreset, buildTiMSpec, stateDictEntries,
  type TiMConfig, type TiMParameterCounts,
} from '../tim/network/index.js';
import type { CommandSpec, Parsed } from './args.js';

export const INFO: CommandSpec = {
  name: 'info',
  brief: 'parameter counts per part and config of a preset or checkpoint',
  summary: 'Print a TiM network\'s configuration and its parameter counts per part (x_embedder, t_embedder, delta_embedder, y_embedder, blocks, projector, final_layer).',
  usage: '<preset|file>',
  positionals: [1, 1],
  details: [
    'A preset (TiM-B/4, TiM-XL/2-256 alias TiM-XL/2, TiM-XL/1-512 alias TiM-XL/1, TiM-T2I) is counted from its',
    'shapes without allocating. A file may be an official .safetensors / .bin state dict or a .pt saved by tim.',
    'A TorchScript archive (.pt saved by tim, whatever the file is named) is code that runs when it loads: it is',
    'refused unless --allow-torchscript says you trust it (docs/security.md).',
    '"without projector" leaves out the REPA projector (training only), as the official README counts.',
  ].join('\n'),
  options: {
    config: { value: true, arg: 'preset|file', help: 'config for a state dict without one (official YAML/JSON, network.params, or a preset)' },
    key: { value: true, arg: 'name', help: 'torch.save checkpoint: read the dict under this top-level key (e.g. ema)' },
    'allow-torchscript': { value: false, help: 'the file may be a TorchScript archive: runs its code (only for files you trust)' },
    json: { value: false, help: 'print JSON instead of a table' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};

export interface InfoResult {
  source: string;
  kind: 'preset' | 'safetensors' | 'state' | 'torchscript';
  config: TiMConfig | null;
  counts: TiMParameterCounts;
  /** Counts of the config's architecture when the file has a config: do the file's shapes match it? */
  matchesConfig: boolean | null;
  mismatches: string[];
}

const PART_ORDER = ['x_embedder', 't_embedder', 'delta_embedder', 'y_embedder', 'blocks', 'projector', 'final_layer'];

function countsFromShapes(entries: [string, number[]][]): TiMParameterCounts {
  const parts: Record<string, number> = {};
  let total = 0;
  for (const [k, shape] of entries) {
    const n = shape.reduce((a, b) => a * b, 1);
    const dot = k.indexOf('.');
    const part = dot < 0 ? k : k.slice(0, dot);
    parts[part] = (parts[part] ?? 0) + n;
    total += n;
  }
  // The official attribute order (what presets print), whatever order the file stores them in.
  const rank = (k: string): number => (PART_ORDER.indexOf(k) + PART_ORDER.length + 1) % (PART_ORDER.length + 1);
  const ordered = Object.fromEntries(Object.entries(parts).sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : 1)));
  return { parts: ordered, total, withoutProjector: total - (parts.projector ?? 0) };
}

/** Keys/shapes of the file against those the config's architecture has. */
function compare(config: TiMConfig, entries: [string, number[]][]): string[] {
  const want = new Map(stateDictEntries(buildTiMSpec(config)).map((e) => [e.key, e.shape]));
  const out: string[] = [];
  const have = new Map(entries);
  for (const [k, s] of want) {
    const h = have.get(k);
    if (!h) out.push(`missing ${k}`);
    else if (h.join(',') !== s.join(',')) out.push(`${k}: file [${h.join(', ')}], config [${s.join(', ')}]`);
  }
  for (const k of have.keys()) if (!want.has(k)) out.push(`unexpected ${k}`);
  return out;
}

export function infoOf(target: string, opts: { config?: string; key?: string; allowTorchScript?: boolean }): InfoResult {
  const preset = resolvePreset(target);
  if (preset) {
    const config = resolveConfig(preset);
    return { source: preset, kind: 'preset', config, counts: parameterCounts(preset), matchesConfig: null, mismatches: [] };
  }
  const kind = checkpointKind(target);
  let entries: [string, number[]][];
  let metadata: Record<string, string> | null = null;
  let config: TiMConfig | null = null;
  if (kind === 'safetensors') {
    using f = torch.openSafetensors(target);
    entries = f.keys().map((k) => [k, f.info(k).shape]);
    metadata = f.metadata;
  } else if (kind === 'state') {
    const rec = torch.load(target, { format: 'torch', key: opts.key });
    entries = Object.entries(rec).map(([k, t]) => [k, t.shape]);
    for (const t of Object.values(rec)) t.dispose();
  } else {
    if (opts.allowTorchScript !== true) throw torchScriptRefused(target, 'tim info', '--allow-torchscript');
    using model = TiM.load(target, { ...(opts.config === undefined ? {} : { config: opts.config }), allowTorchScript: true });
    config = { ...model.config };
    entries = model.namedParameters().map(([k, t]) => {
      const s = t.shape;
      t.dispose();
      return [k, s];
    });
  }
  if (kind !== 'torchscript') config = checkpointConfig(target, entries.map(([k]) => k), metadata, opts.config);
  const counts = countsFromShapes(entries);
  const mismatches = config ? compare(config, entries) : [];
  return { source: target, kind, config, counts, matchesConfig: config ? mismatches.length === 0 : null, mismatches };
}

const fmt = (n: number): string => n.toLocaleString('en-US');
/** Parts listed one per line before the rest is summed into one row. */
const MAX_PART_ROWS = 40;
const millions = (n: number): string => `${(n / 1e6).toFixed(2)}M`;

export function formatInfo(r: InfoResult): string {
  const lines: string[] = [];
  lines.push(`${r.source} (${r.kind === 'preset' ? 'preset' : `${r.kind === 'state' ? 'torch.save state dict' : r.kind === 'torchscript' ? 'TorchScript module' : 'safetensors state dict'}`})`);
  const c = r.config;
  if (c) {
    lines.push(
      `  ${c.variant.toUpperCase()}  input ${c.inputSize}×${c.inputSize}×${c.inChannels}, patch ${c.patchSize}, hidden ${c.hiddenSize}, depth ${c.depth}, heads ${c.numHeads}, encoder_depth ${c.encoderDepth}`,
      `  new_condition ${c.newCondition}, use_new_embed ${c.useNewEmbed}, distance_aware ${c.distanceAware}, qk_norm ${c.qkNorm}, lora_hidden ${c.loraHiddenSize}, z_dim ${c.zDim}, projector_dim ${c.projectorDim}, rope_grid ${c.ropeGrid}` +
        (c.variant === 'c2i' ? `, classes ${c.numClasses}` : `, cap_feat_dim ${c.capFeatDim}`),
    );
  } else {
    lines.push('  (no config found: counts from the file only; pass --config to check them)');
  }
  lines.push('');
  // A file of any shape prints a bounded table (no spread of an unbounded list either: a file of
  // 600k top-level tensors would overflow the call stack).
  const parts = Object.entries(r.counts.parts);
  const shown: [string, number][] = parts.slice(0, MAX_PART_ROWS);
  if (parts.length > MAX_PART_ROWS) {
    let rest = 0;
    for (let i = MAX_PART_ROWS; i < parts.length; i++) rest += parts[i]![1];
    shown.push([`(${(parts.length - MAX_PART_ROWS).toLocaleString('en-US')} more parts)`, rest]);
  }
  const rows: [string, number][] = [...shown, ['total', r.counts.total], ['without projector', r.counts.withoutProjector]];
  let w = 0, nw = 0;
  for (const [k, n] of rows) {
    w = Math.max(w, k.length);
    nw = Math.max(nw, fmt(n).length);
  }
  for (const [k, n] of rows) {
    if (k === 'total') lines.push(`  ${'-'.repeat(w + nw + 12)}`);
    lines.push(`  ${k.padEnd(w)}  ${fmt(n).padStart(nw)}  (${millions(n)})`);
  }
  if (r.matchesConfig !== null) {
    lines.push('', r.matchesConfig ? '  shapes match the config\'s architecture' : `  shapes do NOT match the config: ${r.mismatches.slice(0, 10).join('; ')}${r.mismatches.length > 10 ? ` (+${r.mismatches.length - 10} more)` : ''}`);
  }
  return lines.join('\n');
}

export function runInfo(p: Parsed, print: (s: string) => void): number {
  const r = infoOf(p.positionals[0]!, {
    config: p.options.config as string | undefined, key: p.options.key as string | undefined, allowTorchScript: p.options['allow-torchscript'] === true,
  });
  print(p.options.json ? JSON.stringify(r, null, 2) : formatInfo(r));
  return r.matchesConfig === false ? 1 : 0;
}
