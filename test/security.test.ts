/**
 * A weights file never runs code. A TorchScript archive made by Python's torch (torch.jit.save)
 * whose __setstate__ creates and writes a file (torch.from_file(PATH, True, 16).fill_(80)) is saved
 * as x.safetensors, x.bin and x.pt: TiM.load, torch.load, `tim info`, `tim convert` and
 * `tim sample` refuse each one with a typed error (E_UNSAFE) that says why and how to opt in, and
 * the payload's file is never created. With the explicit opt-in the payload does run, which shows
 * the archive is a real attack and not a broken file.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, torch } from '../lib/index.js';
import { main } from '../lib/cli/tim.js';
import { PYTHON } from './helpers/python.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-security-'));
/** what the archives refused below would create */
const TARGET = join(dir, 'PWNED');
/** what the archive loaded with the explicit opt-in creates */
const TRUSTED_TARGET = join(dir, 'RAN');
const NAMES = ['x.safetensors', 'x.bin', 'x.pt'];

const MAKE = `
import sys, os, importlib.util, torch
target, outs = sys.argv[1], sys.argv[2:]
src = '''
import torch
from typing import Tuple
class Evil(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        p = torch.from_file(%r, True, 16, dtype=torch.uint8).fill_(80)
        self.w = state[0] + p[:2].to(torch.float32) * 0.0
        self.training = state[1]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w
''' % target
d = os.path.dirname(outs[0])
f = os.path.join(d, 'evil_mod_%d.py' % os.getpid())
open(f, 'w').write(src)
spec = importlib.util.spec_from_file_location('evil_mod', f)
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
m = torch.jit.script(mod.Evil())
for o in outs: torch.jit.save(m, o)
os.remove(f)
`;

function makeArchives(target: string, outs: string[]): void {
  execFileSync(PYTHON, ['-c', MAKE, target, ...outs], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
}

async function cli(...args: string[]): Promise<{ code: number; err: string; out: string }> {
  const err: string[] = [], out: string[] = [];
  const code = await main(args, (s) => out.push(s), (s) => err.push(s));
  return { code, err: err.join('\n'), out: out.join('\n') };
}

beforeAll(() => {
  makeArchives(TARGET, NAMES.map((n) => join(dir, n)));
  makeArchives(TRUSTED_TARGET, [join(dir, 'trusted.pt')]);
}, 120_000);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('a TorchScript archive posing as weights', () => {
  it('the archive is a real attack: torch.jit.load (the explicit way to load code) runs its payload', () => {
    expect(existsSync(TRUSTED_TARGET)).toBe(false);
    const m = torch.jit.load(join(dir, 'trusted.pt'));
    m.dispose();
    expect(readFileSync(TRUSTED_TARGET, 'latin1')).toBe('P'.repeat(16));
  });

  it('TiM.load refuses it under any name (E_UNSAFE, says how to opt in); nothing runs', () => {
    for (const n of NAMES) {
      expect(() => TiM.load(join(dir, n)), n).toThrow(expect.objectContaining({
        name: 'TorchError', code: 'E_UNSAFE', message: expect.stringMatching(/is a TorchScript archive.*runs the code.*allowTorchScript: true/s),
      }));
      // also with an explicit config (which used to skip nothing either)
      expect(() => TiM.load(join(dir, n), { config: 'TiM-B/4' }), n).toThrow(expect.objectContaining({ code: 'E_UNSAFE' }));
    }
    expect(existsSync(TARGET)).toBe(false);
  });

  it('torch.load (the restricted pickle reader) refuses it without running it', () => {
    for (const n of ['x.bin', 'x.pt']) {
      expect(() => torch.load(join(dir, n)), n).toThrow(expect.objectContaining({ code: 'E_UNSAFE', message: expect.stringMatching(/TorchScript archive.*torch\.load never runs/) }));
    }
    expect(() => torch.load(join(dir, 'x.safetensors'), { format: 'torch' })).toThrow(expect.objectContaining({ code: 'E_UNSAFE' }));
    expect(existsSync(TARGET)).toBe(false);
  });

  it('tim info and tim convert refuse it (exit 1, E_UNSAFE, names --allow-torchscript) and write nothing', async () => {
    for (const n of NAMES) {
      const info = await cli('info', join(dir, n));
      expect(info.code, n).toBe(1);
      expect(info.err).toMatch(/TorchScript archive.*--allow-torchscript.*\[E_UNSAFE\]/s);
      const out = join(dir, `converted-${n}.safetensors`);
      const conv = await cli('convert', join(dir, n), out, '--config', 'TiM-B/4');
      expect(conv.code, n).toBe(1);
      expect(conv.err).toMatch(/--allow-torchscript.*\[E_UNSAFE\]/s);
      expect(existsSync(out)).toBe(false);
    }
    expect(existsSync(TARGET)).toBe(false);
  });

  it('tim sample refuses a TorchScript --ckpt', async () => {
    const cfg = join(dir, 'cfg.yaml');
    writeFileSync(cfg, readFileSync('test/fixtures/tiny-train.yaml'));
    const outDir = join(dir, 'samples');
    const r = await cli('sample', '--ckpt', join(dir, 'x.safetensors'), '--config', cfg, '--out', outDir, '--n', '1', '--steps', '1');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/--allow-torchscript.*\[E_UNSAFE\]/s);
    expect(existsSync(outDir)).toBe(false);
    expect(existsSync(TARGET)).toBe(false);
  });

  it('the opt-in still loads our own .pt (TiM.save), in the API and the CLI', async () => {
    torch.manualSeed(0);
    const own = join(dir, 'own');
    mkdirSync(own);
    {
      using m = TiM.fromOfficialConfig('test/fixtures/tiny-train.yaml');
      m.save(join(own, 'tiny.pt'));
    }
    expect(() => TiM.load(join(own, 'tiny.pt'))).toThrow(expect.objectContaining({ code: 'E_UNSAFE' }));
    {
      using back = TiM.load(join(own, 'tiny.pt'), { allowTorchScript: true });
      expect(back.config.inChannels).toBe(1);
    }
    const info = await cli('info', join(own, 'tiny.pt'), '--allow-torchscript', '--json');
    expect(info.code, info.err).toBe(0);
    expect(JSON.parse(info.out).kind).toBe('torchscript');
    const conv = await cli('convert', join(own, 'tiny.pt'), join(own, 'tiny.safetensors'), '--allow-torchscript');
    expect(conv.code, conv.err).toBe(0);
    // the converted weights are data only: no opt-in needed
    using st = TiM.load(join(own, 'tiny.safetensors'));
    expect(st.config.inChannels).toBe(1);
  });
});
