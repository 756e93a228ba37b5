/**
 * VAE decode: tim-torch's in-process TorchScript VAE (VAE.load → decode) versus diffusers' own
 * modules (bench/py/vae_decode.py: `vae._decode(z).sample` as the official sd_vae_decode /
 * dc_ae_decode call it) on the same torch and the same intra-op thread count, float32, random
 * weights from diffusers' init saved as a diffusers folder that both sides load.
 *
 *   TIM_TORCH_ADDON=$PWD/build-torch2/Release/tim_torch.node \
 *   TIM_TORCH_PYTHON=/work/venvs/diffusers/bin/python PYTHONPATH=/work/src/diffusers/src \
 *   npx tsx bench/vae-decode.ts [--quick] [--threads 2] [--out DIR]
 *
 * Python needs diffusers importable (hence the venv and PYTHONPATH above); use the pip torch 2.x
 * build of the addon with the venv's torch so both sides run the same libtorch.
 * Cases: SD-VAE (sd-vae-ft-ema config) at 256² (32×32×4 latents), batch 1 and 2; DC-AE
 * (dc-ae-f32c32-sana-1.1 config) at 512² (16×16×32), batch 1, when VAE.load builds AutoencoderDC.
 * Throughput rows compare images per CPU-second (one process each, `threads` intra-op threads),
 * with wall-time medians beside them. Memory rows: the peak RSS of a fresh process that loads the
 * VAE and decodes a batch of 4 (2 for DC) sliced one image at a time (the official slice_vae);
 * reported, not goals. --quick: 64² images, one rep, for smoke runs only; --rss-only: the memory
 * rows alone (written as vae-decode-rss.json).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VAE, torch } from '../lib/index.js';
import { PYTHON, benchDir, cliArgs, formatTable, median, newResult, pythonEnv, ratioRow, startPyScript, writeResult, type Options, type Result } from './harness.js';

interface Case {
  name: string;
  family: 'AutoencoderKL' | 'AutoencoderDC';
  configFile: string;
  size: number;
  factor: number;
  latentChannels: number;
  batches: number[];
  rssBatch: number;
}

const CASES: Case[] = [
  { name: 'sd-vae', family: 'AutoencoderKL', configFile: 'sd-vae-ft-ema.json', size: 256, factor: 8, latentChannels: 4, batches: [1, 2], rssBatch: 4 },
  { name: 'dc-ae', family: 'AutoencoderDC', configFile: 'dc-ae-f32c32-sana-1.1.json', size: 512, factor: 32, latentChannels: 32, batches: [1], rssBatch: 2 },
];

const configPath = (c: Case): string => join(benchDir, '..', 'test', 'fixtures', 'vae-configs', c.configFile);

function runPython(cfg: Record<string, unknown>): Record<string, unknown> {
  const r = spawnSync(PYTHON, [join(benchDir, 'py', 'vae_decode.py'), JSON.stringify(cfg)], { encoding: 'utf8', env: pythonEnv(), maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench/py/vae_decode.py (${String(cfg.mode)}) failed: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** The Node side of the RSS measurement, in a fresh process (this file with --rss-child). */
function nodeRss(cfg: Record<string, unknown>): Record<string, number> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--rss-child', JSON.stringify(cfg)], {
    encoding: 'utf8', env: process.env, maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`vae-decode --rss-child failed: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
}

/**
 * Peak RSS of this process's own memory map (VmHWM). Not resourceUsage().maxRSS: Linux carries a
 * parent's peak into the ru_maxrss of a child it forks and execs, so the child of this big bench
 * process would report the parent's peak.
 */
function peakRssMb(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

function rssChild(cfg: { folder: string; threads: number; z: string; shape: number[]; slice: number | null }): void {
  torch.setNumThreads(cfg.threads);
  const vae = VAE.load(cfg.folder);
  const z = torch.fromBuffer(readFileSync(cfg.z), 'float32', cfg.shape, { copy: true });
  const before = peakRssMb();
  const t0 = performance.now();
  const out = vae.decode(z, cfg.slice === null ? {} : { sliceSize: cfg.slice });
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ rss_before_mb: before, max_rss_mb: peakRssMb(), ms, shape: out.shape }));
  out.dispose();
  z.dispose();
  vae.dispose();
}

async function runCase(c: Case, o: Options & { rssOnly?: boolean }, threads: number, dir: string, r: Result): Promise<void> {
  const size = o.quick ? 64 : c.size;
  // Full size a decode takes seconds (SD-VAE 256²) to tens of seconds (DC-AE 512²) on 2 threads.
  const reps = o.quick ? 1 : c.family === 'AutoencoderKL' ? 3 : 2;
  const folder = join(dir, c.name);
  const config = JSON.parse(readFileSync(configPath(c), 'utf8')) as Record<string, unknown>;
  const made = runPython({ mode: 'make', family: c.family, config, folder, seed: 0 });
  let vae: VAE;
  try {
    vae = VAE.load(folder);
  } catch (e) {
    r.notes.push(`${c.name}: not run: ${(e as Error).message}`);
    return;
  }
  const maxB = Math.max(...c.batches, c.rssBatch);
  const h = size / c.factor;
  const shape = [maxB, c.latentChannels, h, h];
  torch.manualSeed(0);
  const z = torch.randn(shape);
  const zPath = join(dir, `${c.name}-z.bin`);
  writeFileSync(zPath, z.toTypedArray() as Float32Array);
  const py = o.rssOnly ? null : await startPyScript('py/vae_decode.py', { mode: 'serve', family: c.family, folder, threads, z: zPath, shape });
  if (py) try {
    for (const b of c.batches) {
      const zb = z.narrow(0, 0, b);
      const node: number[] = [], nodeCpu: number[] = [], python: number[] = [], pyCpu: number[] = [];
      const nodeOnce = (into: number[], intoCpu: number[]): void => {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        vae.decode(zb).dispose();
        into.push(performance.now() - t0);
        const d = process.cpuUsage(c0);
        intoCpu.push((d.user + d.system) / 1000);
      };
      const pyOnce = async (): Promise<void> => {
        const res = await py.request(JSON.stringify({ batch: b, reps: 1 }));
        python.push(...(res.ms as number[]));
        pyCpu.push(...(res.cpu_ms as number[]));
      };
      // warm-up: the first TorchScript calls profile and optimise the graph
      nodeOnce([], []);
      await py.request(JSON.stringify({ batch: b, reps: 1 }));
      for (let k = 0; k < reps; k++) {
        if (k % 2 === 0) { nodeOnce(node, nodeCpu); await pyOnce(); }
        else { await pyOnce(); nodeOnce(node, nodeCpu); }
      }
      const ips = (ms: number): number => b / (ms / 1000);
      const label = `${c.name} ${size}² batch ${b}`;
      r.rows.push(ratioRow(`${label}: images/CPU-s (median)`, ips(median(nodeCpu)), ips(median(pyCpu)), { min: 1.0, text: 'ratio >= 1.0' }, 'img/s'));
      r.rows.push(ratioRow(`${label}: images/s wall (median)`, ips(median(node)), ips(median(python)), { text: 'info' }, 'img/s'));
      r.notes.push(`${label}: wall ms Node ${node.map((x) => x.toFixed(0)).join(' ')}; Python ${python.map((x) => x.toFixed(0)).join(' ')}`);
      zb.dispose();
    }
    // Same weights, same z: the two decoders must agree.
    const outPy = join(dir, `${c.name}-py.bin`);
    await py.request(JSON.stringify({ write: outPy, batch: 1 }));
    torch.scope(() => {
      const mine = vae.decode(z.narrow(0, 0, 1));
      const theirs = torch.fromBuffer(readFileSync(outPy), 'float32', mine.shape, { copy: true });
      r.notes.push(`${c.name}: decode of the same z differs from diffusers by max ${mine.sub(theirs).abs().max().item().toExponential(2)} (outputs up to ${theirs.abs().max().item().toFixed(2)})`);
    });
    const attn = c.family === 'AutoencoderKL' ? `, mid-block attention ${torch.hasOp('aten::scaled_dot_product_attention') ? 'sdpa' : 'math'}` : '';
    r.notes.push(`${c.name}: ${String(made.parameters)} parameters (diffusers' init, seed 0)${attn}`);
  } finally {
    py.close(JSON.stringify({ quit: true }));
  }
  vae.dispose();
  // Peak RSS of a sliced decode (official slice_vae: one latent at a time), each side in a fresh process.
  const rssShape = [c.rssBatch, ...shape.slice(1)];
  const zr = z.narrow(0, 0, c.rssBatch).contiguous();
  const zrPath = join(dir, `${c.name}-zr.bin`);
  writeFileSync(zrPath, zr.toTypedArray() as Float32Array);
  zr.dispose();
  z.dispose();
  const rssCfg = { folder, threads, z: zrPath, shape: rssShape, slice: 1 };
  const n = nodeRss(rssCfg);
  const p = runPython({ mode: 'rss', family: c.family, ...rssCfg });
  const label = `${c.name} ${size}² batch ${c.rssBatch} sliced 1`;
  r.rows.push(ratioRow(`${label}: peak RSS (load + decode)`, n.max_rss_mb!, p.max_rss_mb as number, { text: 'info' }, 'MiB'));
  // Not a like-for-like split: diffusers' from_pretrained leaves the parameters backed by the mapped
  // safetensors file, paged in only as the first decode touches them, so its "after load" is low.
  r.notes.push(`${label}: RSS after load Node ${n.rss_before_mb!.toFixed(0)} MiB, Python ${(p.rss_before_mb as number).toFixed(0)} MiB; sliced decode wall ms Node ${n.ms!.toFixed(0)}, Python ${(p.ms as number).toFixed(0)}`);
}

export async function run(o: Options & { rssOnly?: boolean }): Promise<Result> {
  const threads = o.threads ?? 2;
  torch.setNumThreads(threads);
  const r = newResult(o.rssOnly ? 'vae-decode-rss' : 'vae-decode', `VAE decode: tim-torch VAE vs diffusers (float32, random weights)${o.rssOnly ? ', peak RSS only' : ''}`, o.quick, {
    threads, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? null, libtorch: torch.buildInfo().torchVersion,
  });
  const dir = mkdtempSync(join(tmpdir(), 'tim-bench-vae-'));
  try {
    for (const c of CASES) await runCase(c, o, threads, dir, r);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const args = cliArgs(argv);
  const child = args.str('rss-child');
  if (child !== undefined) {
    rssChild(JSON.parse(child) as Parameters<typeof rssChild>[0]);
  } else {
    const res = await run({ quick: args.flag('quick'), threads: args.num('threads'), rssOnly: args.flag('rss-only') });
    console.log(formatTable(res));
    console.log(`  -> ${writeResult(res, args.str('out'))}`);
  }
}
