/**
 * PyTorch torch.save zip checkpoints (.pt / .bin), written by Python's torch and read back here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { torch } from '../lib/index.js';
import { py, type PyTensor } from './helpers/python.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-ckpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const p = (name: string): string => join(dir, name);

let ref: Record<string, Record<string, PyTensor>>;

beforeAll(() => {
  // One Python run writes every checkpoint and returns what Python's torch.load sees in them.
  ref = py(`
    import zipfile, io, pickle
    D = ${JSON.stringify(dir)}
    torch.manual_seed(0)
    base = torch.arange(12.).reshape(3, 4)
    flat = {
        'f32': torch.randn(2, 3), 'f64': torch.randn(3).double(), 'f16': torch.randn(4).half(),
        'bf16': torch.randn(4).bfloat16(), 'i64': torch.tensor([-2**40, 0, 2**40 + 1]), 'i32': torch.tensor([-5, 7], dtype=torch.int32),
        'i16': torch.tensor([-300, 300], dtype=torch.int16), 'i8': torch.tensor([-128, 127], dtype=torch.int8),
        'u8': torch.tensor([0, 255], dtype=torch.uint8), 'bool': torch.tensor([True, False, True]),
        'scalar': torch.tensor(3.5), 'empty': torch.zeros(0, 3), 'base': base, 'col': base[:, 1], 'tr': base.t(),
        'param': torch.nn.Parameter(torch.ones(2)),
    }
    torch.save(flat, D + '/flat.pt')
    for proto in (4, 5):
        torch.save(flat, D + f'/flat_p{proto}.pt', pickle_protocol=proto)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    torch.save(m.state_dict(), D + '/state_dict.bin')
    torch.save({'model': m.state_dict(), 'ema': m.state_dict(), 'step': 3, 'args': {'lr': 1e-4}}, D + '/nested.pt')
    torch.save({'a': torch.ones(2), 'step': 3}, D + '/mixed.pt')
    torch.save([torch.ones(2)], D + '/list.pt')
    torch.save({'a': torch.ones(2)}, D + '/legacy.pt', _use_new_zipfile_serialization=False)
    torch.save({'a': torch.zeros(0)}, D + '/tiny.pt')
    torch.save({'big': torch.ones(16 << 20), 'small': torch.ones(4)}, D + '/big.pt')
    out['flat'] = dict(torch.load(D + '/flat.pt'))
    out['state_dict'] = dict(torch.load(D + '/state_dict.bin'))
    out['ema'] = dict(torch.load(D + '/nested.pt')['ema'])

    # hostile: a pickle that names os.system (Python's pickle would run it; the reader must not)
    marker = D + '/pwned'
    evil = (b'\\x80\\x02}q\\x00X\\x01\\x00\\x00\\x00aq\\x01cos\\nsystem\\nq\\x02X' + len('touch ' + marker).to_bytes(4, 'little')
            + ('touch ' + marker).encode() + b'\\x85q\\x03Rq\\x04s.')
    with zipfile.ZipFile(D + '/evil.pt', 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', evil)
        z.writestr('archive/version', '3\\n')
    # hostile: storage claims 1000 elements but its record holds 8 bytes
    buf = io.BytesIO()
    torch.save({'a': torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    names = src.namelist()
    pkl_name = [n for n in names if n.endswith('data.pkl')][0]
    pkl = src.read(pkl_name)
    big = pkl.replace(b'K\\x02', b'M\\xe8\\x03', 1)  # numel 2 -> 1000 (BININT1 2 -> BININT2 1000)
    with zipfile.ZipFile(D + '/liar.pt', 'w', zipfile.ZIP_STORED) as z:
        for n in names:
            z.writestr(n, big if n == pkl_name else src.read(n))
    # hostile: compressed records (torch.save never writes them)
    with zipfile.ZipFile(D + '/deflated.pt', 'w', zipfile.ZIP_DEFLATED) as z:
        for n in names:
            z.writestr(n, src.read(n))
    out['liar_changed'] = big != pkl
  `);
});

function disposeAll(r: Record<string, torch.Tensor>): void {
  for (const t of Object.values(r)) t.dispose();
}

function values(t: torch.Tensor): unknown {
  return t.dtype === 'float16' || t.dtype === 'bfloat16' ? t.float().toArray() : t.toArray();
}

describe('torch.save checkpoints', () => {
  it('a dict of tensors of every dtype loads with equal values, shapes and strides', () => {
    for (const lazy of [true, false]) {
      const r = torch.load(p('flat.pt'), { lazy });
      expect(Object.keys(r)).toEqual(Object.keys(ref.flat!));
      for (const [k, want] of Object.entries(ref.flat!)) {
        expect(r[k]!.dtype, k).toBe(want.dtype);
        expect(r[k]!.shape, k).toEqual(want.shape);
        expect(values(r[k]!), k).toEqual(want.data);
      }
      // views keep their layout and share storage with their base, as in Python
      expect(r.tr!.strides).toEqual([1, 4]);
      expect(r.col!.strides).toEqual([4]);
      r.base!.mul_(10);
      expect(r.col!.toArray()).toEqual([10, 50, 90]);
      disposeAll(r);
    }
  });

  it('pickle protocols 4 and 5 (FRAME, MEMOIZE, STACK_GLOBAL) read the same', async () => {
    for (const proto of [4, 5]) {
      const r = await torch.loadAsync(p(`flat_p${proto}.pt`), { lazy: false });
      expect(Object.keys(r)).toEqual(Object.keys(ref.flat!));
      for (const [k, want] of Object.entries(ref.flat!)) expect(values(r[k]!), `${proto}/${k}`).toEqual(want.data);
      disposeAll(r);
    }
  });

  it('checks its options', () => {
    expect(() => torch.load(p('flat.pt'), { format: 'zip' as 'torch' })).toThrow(RangeError);
    expect(() => torch.load(p('flat.pt'), { device: 'tpu' as 'cpu' })).toThrow(expect.objectContaining({ code: 'E_DEVICE' }));
    expect(() => torch.load(p('flat.pt'), { key: 5 as unknown as string })).toThrow(TypeError);
    expect(() => torch.load(5 as unknown as string)).toThrow(TypeError);
    const a = torch.ones([1]);
    torch.save({ a }, p('k.safetensors'));
    a.dispose();
    expect(() => torch.load(p('k.safetensors'), { key: 'a' })).toThrow(TypeError);
  });

  it('a module state_dict (OrderedDict with _metadata) loads, also as .bin', async () => {
    const r = torch.load(p('state_dict.bin'));
    expect(Object.keys(r)).toEqual(['0.weight', '0.bias', '1.weight', '1.bias']);
    for (const [k, want] of Object.entries(ref.state_dict!)) expect(r[k]!.toArray(), k).toEqual(want.data);
    const ra = await torch.loadAsync(p('state_dict.bin'));
    for (const [k, want] of Object.entries(ref.state_dict!)) expect(ra[k]!.toArray(), k).toEqual(want.data);
    disposeAll(r);
    disposeAll(ra);
  });

  it('a nested dict loads with { key }; without it the error names the way out', async () => {
    const r = torch.load(p('nested.pt'), { key: 'ema' });
    for (const [k, want] of Object.entries(ref.ema!)) expect(r[k]!.toArray(), k).toEqual(want.data);
    disposeAll(r);
    expect(() => torch.load(p('nested.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/entry 'model' is a dict of 4 entries.*key: 'model'/) }));
    expect(() => torch.load(p('nested.pt'), { key: 'nope' })).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/no top-level key 'nope'.*model, ema, step, args/) }));
    expect(() => torch.load(p('nested.pt'), { key: 'step' })).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/a number, not a dict/) }));
    await expect(torch.loadAsync(p('nested.pt'))).rejects.toMatchObject({ code: 'E_FORMAT' });
  });

  it('odd content gives a clear E_FORMAT error', () => {
    expect(() => torch.load(p('mixed.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/entry 'step' is a number/) }));
    expect(() => torch.load(p('list.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/list\/tuple, not a dict/) }));
    expect(() => torch.load(p('legacy.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/legacy/) }));
    expect(() => torch.load(p('flat.pt'), { format: 'safetensors' })).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    expect(() => torch.load(p('missing.pt'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
    const r = torch.load(p('tiny.pt'));
    expect(r.a!.shape).toEqual([0]);
    r.a!.dispose();
  });

  it('a pickle naming os.system is inert: nothing runs, the entry is reported', () => {
    expect(() => torch.load(p('evil.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/entry 'a' is an object \(os\.system\)/) }));
    expect(existsSync(p('pwned'))).toBe(false);
  });

  it('a storage larger than its record, or compressed records, are refused', () => {
    expect(ref.liar_changed).toBe(true);
    expect(() => torch.load(p('liar.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/claims 4000 bytes but its record holds 8/) }));
    expect(() => torch.load(p('deflated.pt'))).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/compressed/) }));
  });

  it('truncated or corrupted checkpoints fail cleanly', () => {
    const bytes = readFileSync(p('state_dict.bin'));
    const step = Math.max(1, Math.floor(bytes.length / 300));
    for (let n = 0; n < bytes.length; n += step) {
      writeFileSync(p('cut.pt'), bytes.subarray(0, n));
      expect(() => torch.load(p('cut.pt'), { format: 'torch' }), `cut at ${n}`).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    }
    let seed = 7;
    const rnd = (k: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % k);
    for (let i = 0; i < 300; i++) {
      const m = Buffer.from(bytes);
      for (let k = 0; k < 4; k++) m[rnd(m.length)] = rnd(256);
      writeFileSync(p('fuzz.pt'), m);
      try {
        disposeAll(torch.load(p('fuzz.pt'), { format: 'torch' }));
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(torch.TorchError);
      }
    }
  });

  it('tensors are zero-copy views of the mapped file: loading reads nothing until touched', () => {
    const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    torch.ones([4]).sum().dispose(); // page in the code sum() runs first
    const file0 = kb('RssFile'), anon0 = kb('RssAnon');
    const r = torch.load(p('big.pt'));
    expect(r.small!.sum().item()).toBe(4);
    expect(kb('RssFile') - file0).toBeLessThan(8 * 1024);
    expect(kb('RssAnon') - anon0).toBeLessThan(32 * 1024); // no 64 MiB copy
    expect(r.big!.sum().item()).toBe(16 << 20);
    expect(kb('RssFile') - file0).toBeGreaterThan(60 * 1024);
    disposeAll(r);
  });

  it('live tensors return to the baseline after disposing a loaded checkpoint', () => {
    const m0 = torch.memory();
    const r = torch.load(p('flat.pt'));
    expect(torch.memory().liveTensors).toBe(m0.liveTensors + Object.keys(r).length);
    disposeAll(r);
    expect(torch.memory()).toEqual(m0);
  });

  it('converts a checkpoint to safetensors that Python-independent readers agree on', () => {
    const r = torch.load(p('state_dict.bin'));
    torch.save(r, p('converted.safetensors'), { source: 'state_dict.bin' });
    const back = torch.loadSafetensors(p('converted.safetensors'));
    expect(back.metadata).toEqual({ source: 'state_dict.bin' });
    for (const [k, t] of Object.entries(r)) expect(back.tensors[k]!.toArray()).toEqual(t.toArray());
    disposeAll(r);
    disposeAll(back.tensors);
  });
});
