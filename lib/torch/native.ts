/**
 * Loads the native addon. Thread-pool defaults are put in the environment first, because OpenMP
 * and OpenBLAS read them once, when libtorch is loaded (see README "Threads").
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TorchError } from './errors.js';
import type { NativeBinding } from './native_binding.js';

const require = createRequire(import.meta.url);
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

// ---- threading defaults (owned by bench/threads.ts; numbers and reasons in docs/benchmarks.md) ----
// OpenMP (libgomp, libtorch's intra-op pool) and OpenBLAS read their settings once, when they load,
// so these go into the environment before the addon loads. A value already set wins, and
// TIM_TORCH_NO_ENV_DEFAULTS=1 turns this block (and the thread default below) off.
//  - GOMP_SPINCOUNT=10000 (when neither it nor OMP_WAIT_POLICY is set): an idle OpenMP worker spins
//    about ten microseconds before it sleeps. libgomp's own default spins 300,000 times; with Debian's
//    libtorch 1.13 that fights OpenBLAS's own spinning threads on a small machine (a small TiM
//    training step took 2.6x as long on 2 cores), while OMP_WAIT_POLICY=PASSIVE (no spinning, this
//    package's earlier default) makes every one of a step's thousands of small parallel ops wake
//    sleeping workers: 1.6x the forward + backward time on pip torch 2.13 (MKL, no OpenBLAS threads).
//    10,000 spins is as fast as PASSIVE on 1.13 and as fast as libgomp's default on 2.13
//    (bench/threads.ts, docs/benchmarks.md "Threads").
//  - OpenBLAS is left at its defaults (all cores; idle workers spin ~0.1 s after each call).
//    OPENBLAS_NUM_THREADS=1 was faster on a loaded 2-core machine (11 of 16 noisy comparisons,
//    median 24%) and stops that spinning, but it would make every matmul single-threaded on big
//    machines. OPENBLAS_THREAD_TIMEOUT=4 (workers sleep at once) was slower with 1 intra-op thread:
//    each BLAS call must then wake them. Both are documented knobs for small shared machines.
//  - Intra-op threads: libtorch 1.13 here reports 1 thread by default; torch in Python uses the
//    physical core count. The package sets the physical core count (of the CPUs this process may
//    run on) at load, unless TIM_TORCH_NUM_THREADS=n says otherwise or OMP_NUM_THREADS /
//    MKL_NUM_THREADS were set (libtorch then already follows them). setNumThreads() changes it later.
const envDefaultsOff = (env: NodeJS.ProcessEnv): boolean =>
  env.TIM_TORCH_NO_ENV_DEFAULTS !== undefined && env.TIM_TORCH_NO_ENV_DEFAULTS !== '0';

/** The variables the package puts into the environment at load (none where the user set the policy). */
export function envDefaults(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  if (envDefaultsOff(env) || env.OMP_WAIT_POLICY !== undefined || env.GOMP_SPINCOUNT !== undefined) return {};
  return { GOMP_SPINCOUNT: '10000' };
}
/** What this process added to process.env at load (a child process that should see the user's own
 * environment, e.g. a Python baseline in a benchmark, removes these). */
export const appliedEnvDefaults: Readonly<Record<string, string>> = envDefaults();
for (const [k, v] of Object.entries(appliedEnvDefaults)) process.env[k] = v;

/** The intra-op thread count to set at load, or undefined to keep libtorch's own choice. */
export function defaultNumThreads(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const forced = env.TIM_TORCH_NUM_THREADS;
  if (forced !== undefined && forced !== '') {
    const n = Number(forced);
    if (!Number.isInteger(n) || n < 0) {
      throw new TorchError(`TIM_TORCH_NUM_THREADS must be a non-negative integer (0: libtorch's default), got '${forced}'`, 'E_RANGE');
    }
    return n === 0 ? undefined : n;
  }
  if (envDefaultsOff(env) || env.OMP_NUM_THREADS || env.MKL_NUM_THREADS) return undefined;
  const os = require('node:os') as typeof import('node:os');
  const logical = os.availableParallelism();
  let perCore = 1; // SMT siblings per core, from the first CPU's topology (Linux); e.g. "0,64" or "0-1"
  try {
    const list = readFileSync('/sys/devices/system/cpu/cpu0/topology/thread_siblings_list', 'utf8').trim();
    let n = 0;
    for (const range of list.split(',')) {
      const [a, b] = range.split('-').map(Number);
      n += b === undefined ? 1 : b - a! + 1;
    }
    if (Number.isInteger(n) && n >= 1) perCore = n;
  } catch {
    /* no sysfs topology: count logical CPUs */
  }
  return Math.max(1, Math.floor(logical / perCore));
}

/** The raw native binding (internal; use the typed API), declared in native_binding.ts. */
export type { NativeBinding } from './native_binding.js';

/** The cause of a load failure, what it means and what to do, as one message. */
function explain(err: unknown, file: string | undefined, forced: boolean): string {
  const msg = err instanceof Error ? err.message : String(err);
  const lines = ['tim-torch: could not load the native addon.'];
  if (file) lines.push(`  addon: ${file}${forced ? ' (from TIM_TORCH_ADDON)' : ''}`);
  lines.push(`  cause: ${msg.split('\n')[0]}`);
  const rebuild = '`npm rebuild tim-torch` (builds from source with cmake-js; needs cmake, g++ and libtorch)';
  if (/one JS thread per process/.test(msg)) {
    lines.push('  tim-torch can only be used from the main thread, not from worker_threads.');
  } else if (forced && /Cannot find module/.test(msg)) {
    lines.push(
      '  TIM_TORCH_ADDON names a file that does not exist.',
      "  Fix: correct the path, or unset TIM_TORCH_ADDON to use the package's own addon.",
    );
  } else if (/undefined symbol/.test(msg)) {
    // Seen when LD_LIBRARY_PATH puts another libtorch (or a stray libc10) ahead of the one the
    // addon was linked with: the libraries load but do not fit together.
    lines.push('  The addon and the libtorch libraries the dynamic loader found do not belong together.');
    const ld = process.env.LD_LIBRARY_PATH;
    if (ld) lines.push(`  LD_LIBRARY_PATH (${ld}) is searched before the addon's RUNPATH and may hold another libtorch.`);
    lines.push(
      `  Fix: ${ld ? 'unset LD_LIBRARY_PATH, or ' : ''}build against the libtorch you want to use: set LIBTORCH and`,
      `  run ${rebuild}.`,
    );
  } else if (/GLIBC_|GLIBCXX_|CXXABI_/.test(msg)) {
    lines.push(
      '  This addon was built on a system with a newer C/C++ runtime (glibc / libstdc++) than this one.',
      `  Fix: ${rebuild}.`,
    );
  } else if (/cannot open shared object file/.test(msg) && /libtorch|libc10/.test(msg)) {
    lines.push(
      "  libtorch's shared libraries are not installed, or not the version the addon was built for.",
      "  Fix: on Debian/Ubuntu run 'sudo bash node_modules/tim-torch/scripts/setup.sh' (libtorch 1.13); with",
      `  another libtorch, set LIBTORCH to it (or PYTHON to a python with torch) and run ${rebuild}:`,
      '  a pip torch 2.13 (CPU) or 2.14 (CUDA 13) gets its prebuild, any other libtorch a build from source.',
    );
  } else if (/cannot open shared object file/.test(msg)) {
    lines.push(
      '  A system library that libtorch or the addon needs is missing.',
      "  Fix: on Debian/Ubuntu run 'sudo bash node_modules/tim-torch/scripts/setup.sh'; elsewhere install the",
      '  library named above.',
    );
  } else if (/invalid ELF header|file too short|wrong ELF class|ELF load command/.test(msg)) {
    lines.push(
      '  The file is not a shared library for this platform (corrupt, truncated, or built for another one).',
      forced ? '  Fix: point TIM_TORCH_ADDON at a tim_torch .node built here, or unset it.' : `  Fix: ${rebuild}.`,
    );
  } else if (/No native build was found|Cannot find module/.test(msg)) {
    lines.push(
      `  No prebuilt addon matches ${process.platform}-${process.arch} and no build from source exists.`,
      `  Fix: ${rebuild}.`,
    );
  }
  return lines.join('\n');
}

/** TIM_TORCH_ADDON, made absolute: a relative path is meant from the working folder, and require()
 * would otherwise look a bare relative name up in node_modules. */
function forcedAddon(): string | undefined {
  const forced = process.env.TIM_TORCH_ADDON;
  return forced ? resolve(forced) : undefined;
}

/**
 * The package's addon, in this order: a build from source (build/Release, build/Debug), the flavour
 * prebuild that scripts/install.cjs installed for a pip torch (prebuilds/<platform>-<arch>/installed/,
 * its RUNPATH set to that torch's folder), the system-libtorch prebuild (node-gyp-build's choice).
 */
function defaultAddon(): string {
  const hasBuild = ['Release', 'Debug'].some((d) => {
    const dir = join(packageRoot, 'build', d);
    return existsSync(dir) && readdirSync(dir).some((n) => n.endsWith('.node'));
  });
  const installed = join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'installed', 'tim_torch.node');
  if (!hasBuild && existsSync(installed)) return installed;
  const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  return nodeGypBuild.resolve(packageRoot);
}

function load(): NativeBinding {
  const forced = forcedAddon();
  let file = forced;
  try {
    if (!forced) file = defaultAddon();
    return require(file as string);
  } catch (err) {
    const e = new TorchError(explain(err, file, forced !== undefined), 'E_LOAD');
    (e as Error & { cause?: unknown }).cause = err;
    throw e;
  }
}

/**
 * glibc malloc thresholds to set at load, or undefined to leave glibc's own (TIM_TORCH_MALLOC=default,
 * TIM_TORCH_NO_ENV_DEFAULTS=1, or MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set by the user).
 *
 * Why: glibc serves blocks of at least the mmap threshold (128 KiB at start) with mmap and returns
 * them to the kernel on free, so every forward pass that allocates and frees activations of that size
 * page-faults them in again (the kernel zeroes each 4 KiB page). glibc raises the threshold by itself
 * after the first large free ("dynamic threshold", up to 32 MiB), but whether and when it does depends
 * on the order of allocations: measured on one small TiM forward (batch 16), Python's torch sometimes
 * ran with 0 and sometimes with 25,200 minor faults per call (1.3x the CPU time), and Node ran with
 * 25,200 every time. Fixing the mmap threshold at the most the dynamic rule reaches (32 MiB) makes the
 * fast state the only state (1-8 faults per call). The cost: freed blocks under 32 MiB, and up to
 * the trim threshold of free heap, stay in the process for reuse instead of going back to the kernel.
 */
export function defaultMallocTuning(env: NodeJS.ProcessEnv = process.env): { mmapThreshold: number; trimThreshold: number } | undefined {
  const v = env.TIM_TORCH_MALLOC;
  if (v !== undefined && v !== '' && v !== 'default' && v !== 'tuned') {
    throw new TorchError(`TIM_TORCH_MALLOC must be 'tuned' (the default) or 'default' (glibc's own thresholds), got '${v}'`, 'E_RANGE');
  }
  if (v === 'default' || (v !== 'tuned' && envDefaultsOff(env))) return undefined;
  if (env.MALLOC_MMAP_THRESHOLD_ !== undefined || env.MALLOC_TRIM_THRESHOLD_ !== undefined) return undefined;
  return { mmapThreshold: MALLOC_MMAP_THRESHOLD, trimThreshold: MALLOC_TRIM_THRESHOLD };
}
/** glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (the most its dynamic threshold reaches, and the most mallopt accepts). */
export const MALLOC_MMAP_THRESHOLD = 32 * 2 ** 20;
/**
 * Free memory at the top of the heap beyond this goes back to the kernel. glibc's dynamic rule says
 * 2x the mmap threshold (64 MiB); a training step frees far more than that at once, and giving it back
 * re-faults it in the next step: minor faults per training step of a TiM (hidden 256, depth 4,
 * batch 16) were 108,560 with glibc's defaults, 30,796 with 32 MiB / 64 MiB, 3,220 with 32 MiB / 256 MiB.
 */
export const MALLOC_TRIM_THRESHOLD = 256 * 2 ** 20;

/** CPU blocks of this size or more are served by the CPU block cache (lib/torch/cpu_cache.ts); smaller ones by glibc. */
export const CPU_CACHE_MIN_BYTES = 2 ** 20;
/**
 * Whether to install the CPU block cache at load (native/cpu_cache.cpp explains why):
 * TIM_TORCH_CPU_CACHE = 'on' (the default) or 'off' (libtorch's own allocator, glibc malloc, for every block).
 */
export function cpuCacheWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return onOffSetting(env, 'TIM_TORCH_CPU_CACHE');
}

/** An environment switch that is 'on' (the default, also when unset or empty) or 'off'; else E_RANGE. */
function onOffSetting(env: NodeJS.ProcessEnv, name: string): boolean {
  const v = env[name];
  if (v === undefined || v === '' || v === 'on') return true;
  if (v === 'off') return false;
  throw new TorchError(`${name} must be 'on' (the default) or 'off', got '${v}'`, 'E_RANGE');
}

/** The CPU block cache's default slack (TIM_TORCH_CPU_CACHE_SLACK overrides it; docs/memory.md). */
export const CPU_CACHE_SLACK = 0.25;
/**
 * How much room the CPU block cache leaves, as a fraction: a freed block is reused for a request up to
 * that much smaller, and the cache reserves up to (1 + slack) × the peak bytes in use before it unmaps
 * cached blocks to map a new one. More slack: more reuse (fewer page faults); less: a lower peak RSS.
 * TIM_TORCH_CPU_CACHE_SLACK = a number in [0, 4], else CPU_CACHE_SLACK.
 */
export function cpuCacheSlack(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.TIM_TORCH_CPU_CACHE_SLACK;
  if (v === undefined || v === '') return CPU_CACHE_SLACK;
  const f = Number(v);
  if (!/^\s*[0-9.eE+-]+\s*$/.test(v) || !(f >= 0 && f <= 4)) {
    throw new TorchError(`TIM_TORCH_CPU_CACHE_SLACK must be a number in [0, 4] (a fraction), got '${v}'`, 'E_RANGE');
  }
  return f;
}

/** CPU cache blocks of this size or more are 2 MiB-aligned and advised to use transparent huge pages. */
export const CPU_CACHE_HUGE_BYTES = 2 * 2 ** 20;
/**
 * Whether the CPU block cache asks for transparent huge pages (madvise(MADV_HUGEPAGE)) for blocks of
 * 2 MiB or more: TIM_TORCH_CPU_CACHE_HUGEPAGES = 'on' (the default) or 'off'. A block that is faulted in
 * again after `cpuCache.trim()` then costs one page fault per 2 MiB instead of 512 (docs/memory.md,
 * "Huge pages"). It does nothing where the kernel's THP setting is 'never'; 'off' is for machines where
 * the kernel's compaction for huge pages stalls.
 */
export function cpuCacheHugePages(env: NodeJS.ProcessEnv = process.env): boolean {
  return onOffSetting(env, 'TIM_TORCH_CPU_CACHE_HUGEPAGES');
}

export const native: NativeBinding = load();
native.setErrorClass(TorchError);
{ const n = defaultNumThreads(); if (n !== undefined) native.setNumThreads(n); } // threading defaults, see above
{ const m = defaultMallocTuning(); if (m) native.mallocTune(m.mmapThreshold, m.trimThreshold); } // allocator defaults, see above
if (cpuCacheWanted()) native.cpuCacheInstall(CPU_CACHE_MIN_BYTES, cpuCacheSlack(), cpuCacheHugePages() ? CPU_CACHE_HUGE_BYTES : 0); // the CPU block cache, see above

/** Where the loaded addon came from (build folder or prebuild). */
export function addonPath(): string {
  return forcedAddon() ?? defaultAddon();
}

/** Version of the package (from package.json). */
export const packageVersion: string = (() => {
  const p = join(packageRoot, 'package.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version : '0.0.0';
})();
