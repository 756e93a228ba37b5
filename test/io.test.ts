/**
 * lib/torch/io: the one atomic-replace rule every writer follows (a failing or killed writer
 * leaves the old file intact), and torch.save by extension: `.bin` / `.pt` / `.pth` write a
 * torch.save zip checkpoint that torch.load and Python's torch.load(weights_only=True) read.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { torch } from '../lib/index.js';
import { AtomicFile, replaceAtomically, replaceAtomicallyAsync, writeFileAtomic } from '../lib/torch/io/atomic.js';
import { archiveKind } from '../lib/torch/io/index.js';
import { py, type PyTensor } from './helpers/python.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-io-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fresh(name: string): string {
  const d = join(dir, name);
  mkdirSync(d);
  return d;
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

/** A writer that puts some bytes into the temporary file, then fails. */
function halfThenFail(tmp: string): never {
  const fd = openSync(tmp, 'wx');
  writeSync(fd, Buffer.from('partial new content'));
  closeSync(fd);
  throw new Error('writer failed mid-write');
}

describe('replaceAtomically: one rule for every writer', () => {
  it('a writer that fails mid-write leaves the old file intact and no temporary file; its error comes through', () => {
    const d = fresh('fail-sync');
    const target = join(d, 'state.json');
    writeFileSync(target, 'old');
    expect(() => replaceAtomically(target, halfThenFail)).toThrow('writer failed mid-write');
    expect(readFileSync(target, 'utf8')).toBe('old');
    expect(readdirSync(d)).toEqual(['state.json']);
    // and a writer that succeeds replaces it, leaving nothing else
    replaceAtomically(target, (tmp) => writeFileSync(tmp, 'new'));
    expect(readFileSync(target, 'utf8')).toBe('new');
    expect(readdirSync(d)).toEqual(['state.json']);
  });

  it('the async variant: same guarantees', async () => {
    const d = fresh('fail-async');
    const target = join(d, 'w.bin');
    writeFileSync(target, 'old');
    await expect(replaceAtomicallyAsync(target, async (tmp) => halfThenFail(tmp))).rejects.toThrow('writer failed mid-write');
    expect(readFileSync(target, 'utf8')).toBe('old');
    expect(readdirSync(d)).toEqual(['w.bin']);
    expect(await replaceAtomicallyAsync(target, async (tmp) => { writeFileSync(tmp, 'new'); return 7; })).toBe(7);
    expect(readFileSync(target, 'utf8')).toBe('new');
    expect(readdirSync(d)).toEqual(['w.bin']);
  });

  it("Node's fs errors become E_IO naming the target; no temporary file is left", () => {
    const d = fresh('fs-errors');
    const missing = join(d, 'no', 'such', 'folder', 'x.txt');
    const e = (() => { try { writeFileAtomic(missing, 'x', 'demo'); } catch (err) { return err as Error & { code?: string }; } return null; })();
    expect(e?.code).toBe('E_IO');
    expect(e?.message).toContain(`demo: cannot write '${missing}'`);
    // the rename onto a non-empty folder fails: the temporary file goes
    mkdirSync(join(d, 'occupied'));
    writeFileSync(join(d, 'occupied', 'keep'), 'x');
    expect(codeOf(() => writeFileAtomic(join(d, 'occupied'), 'x'))).toBe('E_IO');
    expect(readdirSync(d).sort()).toEqual(['occupied']);
  });

  it('AtomicFile: a streamed file appears only on commit; abort or a failure leaves nothing', () => {
    const d = fresh('stream');
    const target = join(d, 'samples.safetensors');
    writeFileSync(target, 'old');
    const a = new AtomicFile(target);
    a.write(Buffer.from('abc'));
    expect(existsSync(a.tmp)).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('old');
    a.abort();
    expect(readdirSync(d)).toEqual(['samples.safetensors']);
    const b = new AtomicFile(target);
    b.write(Buffer.from('new '));
    b.write(Buffer.from('content'));
    b.commit();
    expect(readFileSync(target, 'utf8')).toBe('new content');
    expect(codeOf(() => b.write(Buffer.from('x')))).toBe('E_STATE');
    const c = new AtomicFile(join(d, 'gone', 'x'), (e) => new Error(`mapped: ${(e as Error).message}`));
    expect(() => c.write(Buffer.from('x'))).toThrow(/^mapped: /);
    expect(readdirSync(d)).toEqual(['samples.safetensors']);
  });

  it('a writer killed (SIGKILL) mid-write leaves the old file intact', async () => {
    const d = fresh('killed');
    const target = join(d, 'model.safetensors');
    writeFileSync(target, 'old');
    const atomic = resolve('lib/torch/io/atomic.ts');
    // The child writes part of the new file, says so, then hangs until it is killed.
    const code = `
      import { openSync, writeSync } from 'node:fs';
      const { replaceAtomically } = await import(${JSON.stringify(atomic)});
      replaceAtomically(${JSON.stringify(target)}, (tmp) => {
        const fd = openSync(tmp, 'wx');
        writeSync(fd, Buffer.alloc(1 << 16, 1));
        process.stdout.write('written\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      });
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('written')) res(); });
      child.on('exit', (c) => rej(new Error(`child exited early (${c})`)));
    });
    child.kill('SIGKILL');
    await new Promise((res) => child.on('exit', res));
    expect(readFileSync(target, 'utf8')).toBe('old');
    // The killed writer's temporary file is a hidden name beside the target, never the target.
    expect(readdirSync(d).filter((n) => n !== 'model.safetensors').every((n) => n.startsWith('.model.safetensors.tmp-'))).toBe(true);
  });
});

describe('torch.save by extension', () => {
  const make = (): Record<string, torch.Tensor> => {
    torch.manualSeed(1);
    const base = torch.arange(12, { dtype: 'float32' }).reshape([3, 4]);
    return {
      f32: torch.randn([2, 3]), f64: torch.randn([3], { dtype: 'float64' }), f16: torch.randn([4]).half(),
      bf16: torch.randn([4]).bfloat16(), i64: torch.tensor([-(2 ** 40), 0, 2 ** 40 + 1], { dtype: 'int64' }),
      i32: torch.tensor([-5, 7], { dtype: 'int32' }), i16: torch.tensor([-300, 300], { dtype: 'int16' }),
      i8: torch.tensor([-128, 127], { dtype: 'int8' }), u8: torch.tensor([0, 255], { dtype: 'uint8' }),
      bool: torch.tensor([true, false, true]), scalar: torch.scalarTensor(3.5), empty: torch.zeros([0, 3]),
      tr: base.t(), col: base.select(1, 1),
    };
  };
  const values = (t: torch.Tensor): unknown => (t.dtype === 'float16' || t.dtype === 'bfloat16' ? t.float().toArray() : t.toArray());

  it('.bin / .pt / .pth write a torch.save checkpoint that torch.load reads back equal (every dtype, views, 0-d, empty)', async () => {
    const d = fresh('roundtrip');
    torch.scope(() => {
      const rec = make();
      for (const ext of ['bin', 'pt', 'pth', 'PT']) {
        const p = join(d, `w.${ext}`);
        torch.save(rec, p);
        expect(readFileSync(p).readUInt32LE(0)).toBe(0x04034b50); // a zip archive
        expect(archiveKind(p)).toBe('torch');
        const back = torch.load(p);
        expect(Object.keys(back)).toEqual(Object.keys(rec));
        for (const [k, t] of Object.entries(rec)) {
          expect(back[k]!.dtype, k).toBe(t.dtype);
          expect(back[k]!.shape, k).toEqual(t.shape);
          expect(values(back[k]!), k).toEqual(values(t));
        }
      }
      // a Map works too, and so does saveAsync
      torch.save(new Map([['a', rec.f32!]]), join(d, 'map.pt'));
      expect(torch.load(join(d, 'map.pt')).a!.toArray()).toEqual(rec.f32!.toArray());
    });
    await torch.scopeAsync(async () => {
      const t = torch.ones([5]);
      await torch.saveAsync({ t }, join(d, 'async.pth'));
      expect(torch.load(join(d, 'async.pth')).t!.toArray()).toEqual([1, 1, 1, 1, 1]);
    });
    expect(readdirSync(d).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('an unknown extension, or metadata for a torch.save checkpoint, is a typed error and writes nothing', async () => {
    const d = fresh('bad-ext');
    await torch.scopeAsync(async () => {
      const rec = { a: torch.ones([2]) };
      for (const name of ['w.ckpt', 'w', 'w.safetensors.tmp']) {
        expect(codeOf(() => torch.save(rec, join(d, name)))).toBe('E_ARG');
        await expect(torch.saveAsync(rec, join(d, name))).rejects.toMatchObject({ code: 'E_ARG' });
      }
      expect(codeOf(() => torch.save(rec, join(d, 'w.bin'), { a: 'b' }))).toBe('E_ARG');
      expect(codeOf(() => torch.save(rec, ''))).toBe('E_ARG');
      expect(codeOf(() => torch.save({ a: 1 as never }, join(d, 'w.pt')))).toBe('E_ARG');
    });
    expect(readdirSync(d)).toEqual([]);
    expect(codeOf(() => torch.save({ a: torch.ones([1]) }, join(d, 'missing', 'w.bin')))).toBe('E_IO');
    expect(readdirSync(d)).toEqual([]);
  });

  it("Python's torch.load(weights_only=True) reads our .bin with equal values (Python reference)", () => {
    const d = fresh('python');
    const p = join(d, 'ours.bin');
    const expected: Record<string, unknown> = {};
    torch.scope(() => {
      const rec = make();
      torch.save(rec, p);
      for (const [k, t] of Object.entries(rec)) expected[k] = { dtype: t.dtype, shape: t.shape, data: values(t) };
    });
    const r = py<{ sd: Record<string, PyTensor>; ordered: boolean }>(`
      sd = torch.load(${JSON.stringify(p)}, weights_only=True)
      out['sd'] = dict(sd)
      out['ordered'] = list(sd.keys()) == ${JSON.stringify(Object.keys(expected))}
    `);
    expect(r.ordered).toBe(true);
    for (const [k, e] of Object.entries(expected) as [string, { dtype: string; shape: number[]; data: unknown }][]) {
      const got = r.sd[k]!;
      expect({ dtype: got.dtype, shape: got.shape, data: got.data }, k).toEqual(e);
    }
  });
});
