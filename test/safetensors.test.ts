import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { torch } from '../lib/index.js';
import { _testing } from '../lib/torch/io/safetensors.js';
import { py } from './helpers/python.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const golden = join(repoRoot, 'test', 'fixtures', 'golden');
const dir = mkdtempSync(join(tmpdir(), 'tim-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const p = (name: string): string => join(dir, name);

function disposeAll(r: Record<string, torch.Tensor>): void {
  for (const t of Object.values(r)) t.dispose();
}

/** A stdlib-only safetensors reader and a writer following the format spec, in Python. */
const PY_REF = `
import struct
ORDER = ['BOOL','U8','I8','F8_E5M2','F8_E4M3','I16','U16','F16','BF16','I32','U32','F32','F64','I64','U64']
DT = {'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16, 'I64': torch.int64,
      'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}
def ref_read(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n].decode('utf-8'))
    data = b[8 + n:]
    raw, tensors = {}, {}
    for k, v in h.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        raw[k] = (v['dtype'], v['shape'], data[s:e])
        t = torch.frombuffer(bytearray(data[s:e]), dtype=DT[v['dtype']]) if e > s else torch.empty(0, dtype=DT[v['dtype']])
        tensors[k] = t.reshape(v['shape'])
    return h.get('__metadata__'), raw, tensors
def ref_write(path, raw, metadata):
    items = sorted(raw.items(), key=lambda kv: (-ORDER.index(kv[1][0]), kv[0].encode('utf-8')))
    header = {}
    if metadata is not None:
        header['__metadata__'] = dict(sorted(metadata.items(), key=lambda kv: kv[0].encode('utf-8')))
    off = 0
    for name, (dt, shape, data) in items:
        header[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(data)]}
        off += len(data)
    js = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
    js += b' ' * ((8 - len(js) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(js)) + js + b''.join(d for _, (_, _, d) in items))
`;

/** Runs a snippet (indented like the test code) after PY_REF, through the shared py() helper. */
function pyRef<T = Record<string, any>>(code: string): T {
  const lines = code.replace(/^\n+/, '').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => /^ */.exec(l)![0].length));
  return py<T>(PY_REF + '\n' + lines.map((l) => l.slice(indent)).join('\n'));
}

function allDtypes(): Record<string, torch.Tensor> {
  return {
    f64: torch.tensor([1.5, -2.25, 1e300, -0], { dtype: 'float64' }),
    f32: torch.tensor([[1, 2, 3], [4.5, -5.5, 3.4e38]], { dtype: 'float32' }),
    f16: torch.tensor([0.5, -1, 65504, 6e-5], { dtype: 'float16' }),
    bf16: torch.tensor([1, -3.5, 1e30], { dtype: 'bfloat16' }),
    i64: torch.tensor([-(2 ** 40), 0, 2 ** 40 + 7], { dtype: 'int64' }),
    i32: torch.tensor([-(2 ** 31), 2 ** 31 - 1], { dtype: 'int32' }),
    i16: torch.tensor([-32768, 32767, 5], { dtype: 'int16' }),
    i8: torch.tensor([-128, 127], { dtype: 'int8' }),
    u8: torch.tensor([0, 255, 17], { dtype: 'uint8' }),
    bool: torch.tensor([true, false, true], { dtype: 'bool' }),
    scalar: torch.scalarTensor(7.25, { dtype: 'float32' }),
    empty: torch.zeros([0, 3], { dtype: 'float32' }),
    empty_i64: torch.zeros([2, 0], { dtype: 'int64' }),
  };
}

describe('safetensors round trip', () => {
  it('every dtype, 0-d and empty tensors come back bit-exact', () => {
    const src = allDtypes();
    torch.save(src, p('all.safetensors'));
    for (const lazy of [true, false]) {
      const back = torch.load(p('all.safetensors'), { lazy });
      expect(Object.keys(back).sort()).toEqual(Object.keys(src).sort());
      for (const [k, t] of Object.entries(src)) {
        expect(back[k]!.dtype, k).toBe(t.dtype);
        expect(back[k]!.shape, k).toEqual(t.shape);
        expect(back[k]!.toArray(), k).toEqual(t.toArray());
      }
      disposeAll(back);
    }
    disposeAll(src);
  });

  it('non-contiguous inputs are written contiguously', () => {
    const base = torch.arange(0, 24, 1, { dtype: 'float32' }).reshape([4, 6]);
    const rec = { t: base.t(), strided: base.index(':', '::2'), expanded: torch.tensor([1, 2], { dtype: 'int32' }).reshape([2, 1]).expand([2, 3]) };
    expect(rec.t.isContiguous).toBe(false);
    torch.save(rec, p('nc.safetensors'));
    const back = torch.load(p('nc.safetensors'));
    for (const [k, t] of Object.entries(rec)) {
      expect(back[k]!.shape).toEqual(t.shape);
      expect(back[k]!.toArray()).toEqual(t.toArray());
      expect(back[k]!.isContiguous).toBe(true);
    }
    disposeAll(back);
    disposeAll(rec);
    base.dispose();
  });

  it('metadata round-trips, including quotes, control characters and non-ASCII', () => {
    const meta = { config: JSON.stringify({ a: [1, 2], b: 'x"y' }), 'ünï"\\\n': 'v\u0001\t😀', empty: '' };
    const a = torch.ones([2]);
    torch.save({ a }, p('meta.safetensors'), meta);
    const r = torch.loadSafetensors(p('meta.safetensors'));
    expect(r.metadata).toEqual(meta);
    disposeAll(r.tensors);
    torch.save({ a }, p('nometa.safetensors'));
    using f = torch.openSafetensors(p('nometa.safetensors'));
    expect(f.metadata).toBeNull();
    a.dispose();
  });

  it('tensor names that are Object.prototype keys stay plain data', () => {
    const rec: Record<string, torch.Tensor> = {};
    Object.defineProperty(rec, '__proto__', { value: torch.ones([1]), enumerable: true });
    rec['constructor' as string] = torch.zeros([1]);
    torch.save(rec, p('proto.safetensors'));
    const back = torch.load(p('proto.safetensors'));
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(Object.keys(back).sort()).toEqual(['__proto__', 'constructor']);
    expect(Object.getOwnPropertyDescriptor(back, '__proto__')!.value.toArray()).toEqual([1]);
    disposeAll(back);
    disposeAll(rec);
  });

  it('accepts a Map, and safetensorsHeader() is the header save() writes', () => {
    const m = new Map([['b', torch.ones([2, 2], { dtype: 'float16' })], ['a', torch.zeros([3], { dtype: 'int64' })]]);
    torch.save(m, p('map.safetensors'), { x: 'y' });
    const h = torch.safetensorsHeader(m, { x: 'y' });
    expect(readFileSync(p('map.safetensors')).subarray(0, h.length).equals(h)).toBe(true);
    expect(h.length % 8).toBe(0);
    using f = torch.openSafetensors(p('map.safetensors'));
    expect(f.keys()).toEqual(['a', 'b']); // I64 before F16
    expect(f.info('b')).toEqual({ dtype: 'F16', torchDtype: 'float16', shape: [2, 2], dataOffsets: [24, 32] });
    for (const t of m.values()) t.dispose();
    torch.save({}, p('none.safetensors'));
    expect(torch.load(p('none.safetensors'))).toEqual({});
  });

  it('async load and save give the same result', async () => {
    const src = allDtypes();
    await torch.saveAsync(src, p('async.safetensors'), { k: 'v' });
    expect(readFileSync(p('async.safetensors'))).toEqual((torch.save(src, p('sync.safetensors'), { k: 'v' }), readFileSync(p('sync.safetensors'))));
    for (const lazy of [true, false]) {
      const back = await torch.loadAsync(p('async.safetensors'), { lazy });
      for (const [k, t] of Object.entries(src)) expect(back[k]!.toArray(), k).toEqual(t.toArray());
      disposeAll(back);
    }
    disposeAll(src);
  });

  it('rejects what it cannot store with typed errors and writes nothing', () => {
    const a = torch.ones([2]);
    const d = torch.ones([2]);
    d.dispose();
    expect(() => torch.save({ a, d }, p('bad1.safetensors'))).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
    expect(() => torch.save({ a: 5 as unknown as torch.Tensor }, p('bad2.safetensors'))).toThrow(TypeError);
    expect(() => torch.save({ __metadata__: a }, p('bad3.safetensors'))).toThrow(expect.objectContaining({ code: 'E_VALUE' }));
    expect(() => torch.save({ a }, p('bad4.safetensors'), { x: 1 as unknown as string })).toThrow(TypeError);
    expect(() => torch.save({ ['\uD800']: a }, p('bad5.safetensors'))).toThrow(expect.objectContaining({ code: 'E_VALUE' }));
    for (const n of [1, 2, 3, 4, 5]) expect(existsSync(p(`bad${n}.safetensors`))).toBe(false);
    a.dispose();
  });
});

describe('byte compatibility with the reference format', () => {
  it('matches a spec-following Python writer byte for byte, and Python reads our values', () => {
    const src = allDtypes();
    // names that stress escaping and the reference's byte-wise (UTF-8) name order: U+FF61 sorts
    // before U+1F600 in UTF-8 but after it in UTF-16.
    src['name "q"\\/'] = torch.tensor([1, 2], { dtype: 'float32' });
    src['\uFF61half'] = torch.tensor([3], { dtype: 'float32' });
    src['😀emoji'] = torch.tensor([4], { dtype: 'float32' });
    src['ctrl\u0001\n'] = torch.tensor([5], { dtype: 'float32' });
    const meta = { format: 'pt', 'zé': 'ü"\\', a: '1' };
    torch.save(src, p('ours.safetensors'), meta);
    const out = pyRef(`
      meta, raw, tensors = ref_read(${JSON.stringify(p('ours.safetensors'))})
      ref_write(${JSON.stringify(p('ref.safetensors'))}, raw, meta)
      out['meta'] = meta
      out['tensors'] = tensors
      out['keys'] = list(raw.keys())
    `);
    expect(readFileSync(p('ours.safetensors')).equals(readFileSync(p('ref.safetensors')))).toBe(true);
    expect(out.meta).toEqual(meta);
    // file order: dtype alignment descending (I64 first), then UTF-8 byte order of names
    expect(out.keys.slice(0, 3)).toEqual(['empty_i64', 'i64', 'f64']);
    expect(out.keys.indexOf('\uFF61half')).toBeLessThan(out.keys.indexOf('😀emoji'));
    for (const [k, t] of Object.entries(src)) {
      const pt = out.tensors[k];
      expect(pt.shape, k).toEqual(t.shape);
      expect(pt.data, k).toEqual(t.dtype === 'float16' || t.dtype === 'bfloat16' ? t.float().toArray() : t.toArray());
    }
    disposeAll(src);
  });

  it('writes the reference bytes for the reference tests (empty file, one F32 tensor)', () => {
    torch.save({}, p('empty.safetensors'));
    expect([...readFileSync(p('empty.safetensors'))]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    torch.save({}, p('empty-meta.safetensors'), { framework: 'pt' });
    expect(readFileSync(p('empty-meta.safetensors')).subarray(8).toString()).toBe('{"__metadata__":{"framework":"pt"}}     ');
    const t = torch.tensor([0, 1, 2, 3, 4, 5], { dtype: 'float32' }).reshape([1, 2, 3]);
    torch.save({ 'attn.0': t }, p('attn.safetensors'));
    const b = readFileSync(p('attn.safetensors'));
    expect(b.readBigUInt64LE(0)).toBe(64n);
    expect(b.subarray(8, 72).toString()).toBe('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}');
    expect(b.length).toBe(8 + 64 + 24);
    t.dispose();
  });

  it('reads every golden file of the official implementation', () => {
    const cases = readdirSync(golden).filter((c) => existsSync(join(golden, c, 'case.json')));
    expect(cases.length).toBeGreaterThanOrEqual(5);
    for (const c of cases) {
      const spec = JSON.parse(readFileSync(join(golden, c, 'case.json'), 'utf8')) as Record<string, unknown>;
      for (const part of ['inputs', 'outputs'] as const) {
        // the official cases describe each tensor ({ dtype, shape, desc }); the diffusers-made VAE cases give
        // an input's shape alone and an output's description (a string)
        const want = spec[part] as Record<string, { dtype: string; shape: number[] } | number[] | string> | undefined;
        if (!want) continue;
        using f = torch.openSafetensors(join(golden, c, `${part}.safetensors`));
        for (const [name, w] of Object.entries(want)) {
          expect(f.has(name), `${c}/${part}/${name}`).toBe(true);
          if (typeof w === 'string') continue;
          expect(f.info(name).shape, `${c}/${part}/${name}`).toEqual(Array.isArray(w) ? w : w.shape);
          if (!Array.isArray(w)) expect(f.info(name).torchDtype, `${c}/${part}/${name}`).toBe(w.dtype);
        }
      }
      if (existsSync(join(golden, c, 'weights.safetensors'))) {
        const { tensors, metadata } = torch.loadSafetensors(join(golden, c, 'weights.safetensors'));
        const config = JSON.parse(metadata!.config!) as Record<string, unknown>;
        expect(config).toMatchObject({ hidden_size: 64, depth: 4, patch_size: 2, num_classes: 10 });
        expect(Object.keys(tensors).length).toBeGreaterThan(50);
        for (const t of Object.values(tensors)) expect(t.dtype).toBe('float32');
        disposeAll(tensors);
      }
    }
  });

  it('golden weights equal what Python reads from the same file', () => {
    const file = join(golden, 'forward', 'weights.safetensors');
    const out = pyRef(`
      meta, raw, tensors = ref_read(${JSON.stringify(file)})
      out['sums'] = {k: float(v.double().sum()) for k, v in tensors.items()}
      out['first'] = {k: float(v.reshape(-1)[0]) for k, v in tensors.items() if v.numel()}
    `);
    const w = torch.load(file);
    for (const [k, t] of Object.entries(w)) {
      expect(t.double().sum().item(), k).toBeCloseTo(out.sums[k], 9);
      expect(t.reshape([-1]).index(0).item(), k).toBe(out.first[k]);
    }
    disposeAll(w);
  });
});

describe('zero-copy, lazy reads and lifetime', () => {
  function rssFileKb(): number {
    const m = /RssFile:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return Number(m![1]);
  }

  it('get() reads only the tensor asked for (the rest of the file is never paged in)', () => {
    const big = torch.zeros([16 << 20], { dtype: 'float32' }); // 64 MiB
    const small = torch.ones([1024], { dtype: 'float32' });
    torch.save({ big, small }, p('lazy.safetensors'));
    big.dispose();
    small.dispose();
    torch.ones([8]).sum().dispose(); // page in the code sum() runs first
    const r0 = rssFileKb();
    using f = torch.openSafetensors(p('lazy.safetensors'));
    const s = f.get('small');
    expect(s.sum().item()).toBe(1024);
    const r1 = rssFileKb();
    expect(r1 - r0).toBeLessThan(8 * 1024);
    const b = f.get('big');
    expect(b.sum().item()).toBe(0);
    const r2 = rssFileKb();
    expect(r2 - r1).toBeGreaterThan(60 * 1024); // now mapped and touched: 64 MiB of file pages
    s.dispose();
    b.dispose();
  });

  it('tensors outlive close(); in-place writes never reach the file', () => {
    const src = torch.arange(0, 10, 1, { dtype: 'float32' });
    torch.save({ x: src }, p('cow.safetensors'));
    const before = readFileSync(p('cow.safetensors'));
    const f = torch.openSafetensors(p('cow.safetensors'));
    const x = f.get('x');
    const xc = f.get('x', { copy: true });
    f.close();
    expect(f.closed).toBe(true);
    expect(() => f.get('x')).toThrow(expect.objectContaining({ code: 'E_IO' }));
    expect(x.toArray()).toEqual(src.toArray());
    x.mul_(2).add_(1); // copy-on-write private mapping
    expect(x.toArray()).toEqual((src.toArray() as number[]).map((v) => v * 2 + 1));
    expect(readFileSync(p('cow.safetensors')).equals(before)).toBe(true);
    expect(xc.toArray()).toEqual(src.toArray());
    const again = torch.load(p('cow.safetensors'));
    expect(again.x!.toArray()).toEqual(src.toArray());
    disposeAll(again);
    x.dispose();
    xc.dispose();
    src.dispose();
  });

  it('copies when the data is not aligned for the dtype', () => {
    // A valid file whose header length (9) puts the data at byte 17: F32 there is misaligned.
    const json = Buffer.from('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}');
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(json.length));
    const data = Buffer.alloc(8);
    data.writeFloatLE(1.5, 0);
    data.writeFloatLE(-2, 4);
    writeFileSync(p('unaligned.safetensors'), Buffer.concat([head, json, data]));
    expect((8 + json.length) % 4).not.toBe(0);
    const r = torch.load(p('unaligned.safetensors'));
    expect(r.x!.toArray()).toEqual([1.5, -2]);
    disposeAll(r);
  });

  it('live tensors and bytes return to the baseline after disposing loaded records', async () => {
    const src = allDtypes();
    torch.save(src, p('mem.safetensors'));
    disposeAll(src);
    const n = Object.keys(src).length;
    // Counts are compared within one synchronous stretch: between event-loop turns the GC backstop
    // may free garbage tensors of earlier tests, which would move the baseline.
    for (const lazy of [true, false]) {
      const m0 = torch.memory();
      const r = torch.load(p('mem.safetensors'), { lazy });
      expect(torch.memory().liveTensors).toBe(m0.liveTensors + n);
      expect(torch.memory().bytes.cpu).toBeGreaterThan(m0.bytes.cpu);
      disposeAll(r);
      const f = torch.openSafetensors(p('mem.safetensors'));
      f.get('f32').dispose();
      f.close();
      expect(torch.memory()).toEqual(m0);
      const ra = await torch.loadAsync(p('mem.safetensors'), { lazy });
      const m1 = torch.memory();
      disposeAll(ra);
      const m2 = torch.memory();
      expect(m2.liveTensors).toBe(m1.liveTensors - n);
      expect(m2.bytes.cpu).toBeLessThan(m1.bytes.cpu);
    }
  });

  it('loads inside a scope: a returned record survives, everything else is freed', () => {
    torch.save({ a: torch.ones([3]) }, p('scope.safetensors'));
    const m0 = torch.memory().liveTensors;
    const kept = torch.scope(() => {
      torch.load(p('scope.safetensors')); // dropped: freed when the scope closes
      return torch.load(p('scope.safetensors'));
    });
    expect(kept.a!.toArray()).toEqual([1, 1, 1]);
    expect(torch.memory().liveTensors).toBe(m0 + 1);
    disposeAll(kept);
  });
});

describe('benchmark script', () => {
  it('runs end to end on a small file and reports Node vs Python side by side', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', 'safetensors-load.ts'), '--size-mb', '8', '--runs', '1', '--json'], {
      encoding: 'utf8', timeout: 110_000, cwd: repoRoot,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/load \+ touch every tensor\s+[\d.]+\s+[\d.]+\s+[\d.]+x/);
    const json = JSON.parse(r.stdout.trim().split('\n').pop()!) as { tensors: number; summary: Record<string, { node: number; python: number; ratio: number }> };
    expect(json.tensors).toBe(2);
    for (const row of Object.values(json.summary)) {
      expect(row.node).toBeGreaterThan(0);
      expect(row.python).toBeGreaterThan(0);
      expect(row.ratio).toBeCloseTo(row.python / row.node, 6);
    }
  });
});

describe('atomic writes', () => {
  const temps = (d: string): string[] => readdirSync(d).filter((n) => n.includes('.tmp-'));

  it('a save that fails mid-write leaves no file and no temporary file', async () => {
    const d = join(dir, 'atomic1');
    mkdirSync(d);
    const a = torch.randn([1000]);
    _testing.failAfterBytes = 100;
    expect(() => torch.save({ a }, join(d, 'x.safetensors'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
    _testing.failAfterBytes = 2000;
    await expect(torch.saveAsync({ a }, join(d, 'x.safetensors'))).rejects.toMatchObject({ code: 'E_IO' });
    expect(readdirSync(d)).toEqual([]);
    a.dispose();
  });

  it('a failing save keeps the existing file intact; a successful one replaces it atomically', () => {
    const d = join(dir, 'atomic2');
    mkdirSync(d);
    const target = join(d, 'w.safetensors');
    const v1 = torch.full([256], 1);
    const v2 = torch.full([256], 2);
    torch.save({ w: v1 }, target);
    const old = readFileSync(target);
    _testing.failAfterBytes = 500;
    expect(() => torch.save({ w: v2 }, target)).toThrow(expect.objectContaining({ code: 'E_IO' }));
    expect(readFileSync(target).equals(old)).toBe(true);
    expect(temps(d)).toEqual([]);
    // A tensor mapped from the old file keeps the old bytes: rename gives the new file a new inode.
    const mapped = torch.load(target).w!;
    torch.save({ w: v2 }, target);
    expect(mapped.toArray()).toEqual(v1.toArray());
    const fresh = torch.load(target).w!;
    expect(fresh.toArray()).toEqual(v2.toArray());
    expect(readdirSync(d)).toEqual(['w.safetensors']);
    for (const t of [v1, v2, mapped, fresh]) t.dispose();
  });

  it('unwritable destinations give E_IO', () => {
    const a = torch.ones([1]);
    expect(() => torch.save({ a }, join(dir, 'no', 'such', 'dir', 'x.safetensors'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
    mkdirSync(join(dir, 'isdir.safetensors'));
    expect(() => torch.save({ a }, join(dir, 'isdir.safetensors'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
    expect(temps(dir)).toEqual([]);
    a.dispose();
  });
});
