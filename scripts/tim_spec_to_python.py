#!/usr/bin/python3
"""
Builds TorchScript modules from TiM module specs (lib/tim/network/spec.ts, dumped as JSON) and
proves them against the official implementation.

The builder mirrors what the TypeScript builder does with libtorch: one class per spec typeName,
parameters/buffers/attributes/children registered from the spec, and the spec's method sources
(the exact text the TS side will `define`) attached, then compiled with torch.jit.script. The
sources are executed with `torch` bound to `torch.ops.aten`, which is what libtorch's native
resolver gives `Module::define` (aten ops only), so a source that relies on Python-only names
(torch.nn.functional, math, torch.float32, ...) fails here as it would there.

Usage (run with Debian's python3-torch, /usr/bin/python3):
  tim_spec_to_python.py check SPECS.json GOLDEN_DIR REFERENCE.py   -> JSON report on stdout
SPECS.json maps a case name to {"config": TiMConfig, "official": snake_case params, "spec": ModuleSpec}.
The report holds measured numbers; the vitest suite (test/tim-network-spec.test.ts) judges them.
"""
import ast
import functools
import importlib.util
import json
import math
import os
import struct
import sys
import tempfile
import typing

import torch
import torch.nn as nn

# What a method source may name, as libtorch's Module::define sees it.
TS_GLOBALS = {
    'torch': torch.ops.aten,
    'Tensor': torch.Tensor,
    'Optional': typing.Optional,
    'Tuple': typing.Tuple,
    'List': typing.List,
    'Dict': typing.Dict,
}

DTYPES = {'F32': torch.float32, 'F64': torch.float64, 'I64': torch.int64, 'float32': torch.float32, 'int64': torch.int64}


# ---- safetensors -------------------------------------------------------------------------------

def read_safetensors(path):
    """Returns ({name: tensor}, metadata) from a .safetensors file (json header + raw little-endian data)."""
    with open(path, 'rb') as f:
        blob = f.read()
    (n,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        start, end = info['data_offsets']
        t = torch.frombuffer(bytearray(blob[base + start:base + end]), dtype=DTYPES[info['dtype']])
        tensors[name] = t.reshape(info['shape'])
    return tensors, header.get('__metadata__') or {}


# ---- building modules from a spec --------------------------------------------------------------

def _signature(spec):
    return json.dumps({
        'p': [[p['name'], len(p['shape'])] for p in spec['params']],
        'b': [[b['name'], b['dtype'], b['persistent']] for b in spec['buffers']],
        'a': [[a['name'], a['type']] for a in spec['attributes']],
        'c': [[c['name'], c['spec']['typeName']] for c in spec['children']],
        'm': spec['methods'],
    }, sort_keys=True)


def _attr_value(a):
    t, v = a['type'], a['value']
    if t == 'int':
        assert isinstance(v, int) and not isinstance(v, bool), a
        return int(v)
    if t == 'float':
        return float(v)
    if t == 'bool':
        return bool(v)
    if t == 'str':
        return str(v)
    if t == 'List[int]':
        return [int(x) for x in v]
    if t == 'List[float]':
        return [float(x) for x in v]
    raise ValueError(f'unknown attribute type {t}')


class SpecBuilder:
    """One nn.Module subclass per typeName, its methods compiled from the spec's sources."""

    def __init__(self):
        self.classes = {}
        self.signatures = {}
        self.tmp = tempfile.TemporaryDirectory(prefix='tim_spec_')

    def module_class(self, spec):
        name = spec['typeName']
        sig = _signature(spec)
        if name in self.classes:
            if self.signatures[name] != sig:
                raise ValueError(f'typeName {name} is used for two different module signatures')
            return self.classes[name]
        # The sources go to a real file: torch.jit.script reads a function's source via inspect.
        path = os.path.join(self.tmp.name, f'tim_{len(self.classes)}_{name}.py')
        with open(path, 'w') as f:
            f.write('\n\n'.join(spec['methods']))
        modspec = importlib.util.spec_from_file_location(f'tim_spec_{len(self.classes)}', path)
        pymod = importlib.util.module_from_spec(modspec)
        pymod.__dict__.update(TS_GLOBALS)
        modspec.loader.exec_module(pymod)
        attrs = {}
        for src in spec['methods']:
            defs = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)]
            if len(defs) != 1:
                raise ValueError(f'{name}: each method source must hold exactly one def')
            fname = defs[0].name
            if fname in attrs:
                raise ValueError(f'{name}: method {fname} defined twice')
            fn = getattr(pymod, fname)
            attrs[fname] = fn if fname == 'forward' else torch.jit.export(fn)
        cls = type(name, (nn.Module,), attrs)
        self.classes[name] = cls
        self.signatures[name] = sig
        return cls

    def build(self, spec):
        cls = self.module_class(spec)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        for p in spec['params']:
            m.register_parameter(p['name'], nn.Parameter(torch.zeros(p['shape'])))
        for b in spec['buffers']:
            m.register_buffer(b['name'], torch.zeros(b['shape'], dtype=DTYPES[b['dtype']]), persistent=b['persistent'])
        for a in spec['attributes']:
            setattr(m, a['name'], _attr_value(a))
        for ch in spec['children']:
            m.add_module(ch['name'], self.build(ch['spec']))
        return m


def spec_state_entries(spec, prefix=''):
    out = []
    for p in spec['params']:
        out.append((prefix + p['name'], p['shape'], p['init']))
    for b in spec['buffers']:
        if b['persistent']:
            out.append((prefix + b['name'], b['shape'], b['init']))
    for ch in spec['children']:
        out.extend(spec_state_entries(ch['spec'], prefix + ch['name'] + '.'))
    return out


def init_from_spec(module, spec, seed):
    """Initializes parameters as the spec's InitSpec says (the official scheme)."""
    gen = torch.Generator().manual_seed(seed)
    sd = dict(module.named_parameters())
    with torch.no_grad():
        for key, _shape, init in spec_state_entries(spec):
            t = sd[key]
            k = init['kind']
            if k == 'zeros':
                t.zero_()
            elif k == 'ones':
                t.fill_(1.0)
            elif k == 'normal':
                t.normal_(init['mean'], init['std'], generator=gen)
            elif k == 'xavier_uniform':
                a = math.sqrt(6.0 / (init['fanIn'] + init['fanOut']))
                t.uniform_(-a, a, generator=gen)
            else:
                raise ValueError(f'unknown init {k}')


def expected_std(init):
    if init['kind'] == 'normal':
        return init['std']
    if init['kind'] == 'xavier_uniform':
        return math.sqrt(6.0 / (init['fanIn'] + init['fanOut'])) / math.sqrt(3.0)
    return 0.0


# ---- checks ------------------------------------------------------------------------------------

def max_abs(a, b):
    return float((a.double() - b.double()).abs().max().item())


def random_weights(module, seed, scale=0.05):
    """Every parameter := randn * scale (like the golden case), so nothing is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * scale for k, v in module.state_dict().items()}


def load_reference(path):
    spec = importlib.util.spec_from_file_location('tim_reference', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_model(ref, case):
    params = dict(case['official'])
    cls = ref.TiMT2I if case['config']['variant'] == 't2i' else ref.TiM
    return cls(**params)


def key_report(spec, expected_shapes):
    """Compares the spec's state_dict keys/shapes with {key: shape}."""
    ours = {k: list(s) for k, s, _ in spec_state_entries(spec)}
    return {
        'count': len(ours),
        'expected_count': len(expected_shapes),
        'missing': sorted(set(expected_shapes) - set(ours)),
        'unexpected': sorted(set(ours) - set(expected_shapes)),
        'shape_mismatch': sorted(k for k in ours if k in expected_shapes and list(expected_shapes[k]) != ours[k]),
        'same_order': list(ours) == list(expected_shapes),
    }


def build_scripted(builder, spec):
    eager = builder.build(spec)
    return eager, torch.jit.script(eager)


def check_golden(builder, ref, case, golden_dir):
    weights, meta = read_safetensors(os.path.join(golden_dir, 'weights.safetensors'))
    inputs, _ = read_safetensors(os.path.join(golden_dir, 'inputs.safetensors'))
    outputs, _ = read_safetensors(os.path.join(golden_dir, 'outputs.safetensors'))
    spec = case['spec']
    rep = {'golden_config': json.loads(meta['config'])}
    rep['keys'] = key_report(spec, {k: list(v.shape) for k, v in weights.items()})
    _, sm = build_scripted(builder, spec)
    sm.load_state_dict(weights, strict=True)
    sm.eval()
    x, t, r, y, xn = inputs['x'], inputs['t'], inputs['r'], inputs['y'], inputs['x_nonsquare']
    errors, compared = {}, []
    with torch.no_grad():
        inter = sm.forward_intermediates(x, t, r, y)
        for name, got in inter.items():
            if name in outputs:
                errors[name] = max_abs(got, outputs[name])
                compared.append(name)
        inter_ns = sm.forward_intermediates(xn, t, r, y)
        for name in ('rope_cos', 'rope_sin', 'rope_grid', 'out', 'h_proj'):
            errors[name + '_nonsquare'] = max_abs(inter_ns[name], outputs[name + '_nonsquare'])
            compared.append(name + '_nonsquare')
        out, h_proj = sm.forward_with_zs(x, t, r, y)
        out_plain = sm.forward(x, t, r, y)
        out_ns, h_proj_ns = sm.forward_with_zs(xn, t, r, y)
        errors['forward_with_zs.out'] = max_abs(out, outputs['out'])
        errors['forward_with_zs.h_proj'] = max_abs(h_proj, outputs['h_proj'])
        errors['forward.out'] = max_abs(out_plain, outputs['out'])
        errors['forward_with_zs.out_nonsquare'] = max_abs(out_ns, outputs['out_nonsquare'])
        errors['forward_with_zs.h_proj_nonsquare'] = max_abs(h_proj_ns, outputs['h_proj_nonsquare'])
        rep['forward_equals_forward_with_zs'] = bool(torch.equal(out, out_plain))
        rep['intermediates_equal_forward'] = bool(torch.equal(inter['out'], out)) and bool(torch.equal(inter['h_proj'], h_proj))
        # The eager reference (test/fixtures/tim_reference.py) against the same golden data.
        refm = reference_model(ref, case).eval()
        refm.load_state_dict(weights, strict=True)
        ro, rh = refm(x, t, r, y, return_zs=True)
        ron, rhn = refm(xn, t, r, y, return_zs=True)
        rep['reference_errors'] = {
            'out': max_abs(ro, outputs['out']), 'h_proj': max_abs(rh, outputs['h_proj']),
            'out_nonsquare': max_abs(ron, outputs['out_nonsquare']), 'h_proj_nonsquare': max_abs(rhn, outputs['h_proj_nonsquare']),
        }
        rep['script_vs_reference'] = {
            'out': max_abs(out, ro), 'h_proj': max_abs(h_proj, rh), 'out_nonsquare': max_abs(out_ns, ron), 'h_proj_nonsquare': max_abs(h_proj_ns, rhn),
        }
    rep['errors'] = errors
    rep['golden_outputs_not_compared'] = sorted(set(outputs) - set(compared))
    rep['label_dropout'] = check_label_dropout(sm, case['config'])
    # Runs under autograd too (training uses it): gradients reach every parameter.
    sm.train()
    sm.zero_grad()
    o2, h2 = sm.forward_with_zs(x, t, r, y)
    (o2.square().mean() + h2.square().mean()).backward()
    rep['params_without_grad'] = sorted(k for k, p in sm.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all())
    return rep, sm


def check_label_dropout(sm, config):
    n = config['numClasses']
    rep = {}
    y = torch.tensor([3, 4, 7], dtype=torch.int64)
    force = torch.tensor([1, 0, 1], dtype=torch.int64)
    sm.eval()
    rep['forced'] = sm.drop_labels(y, force).tolist()
    rep['forced_bool'] = sm.drop_labels(y, force.bool()).tolist()
    rep['eval_unforced_unchanged'] = bool(torch.equal(sm.drop_labels(y, None), y))
    sm.train()
    big = torch.arange(4000) % n
    torch.manual_seed(7)
    dropped = sm.drop_labels(big, None)
    torch.manual_seed(7)
    expected = torch.where(torch.rand(big.shape[0]) < config['classDropoutProb'], n, big)
    rep['train_matches_official_rule'] = bool(torch.equal(dropped, expected))
    rep['train_drop_fraction'] = float((dropped == n).double().mean().item())
    sm.eval()
    rep['expected_forced'] = torch.where(force != 0, n, y).tolist()
    return rep


def check_rowcol(builder, case, golden_dir, official_sm):
    weights, _ = read_safetensors(os.path.join(golden_dir, 'weights.safetensors'))
    inputs, _ = read_safetensors(os.path.join(golden_dir, 'inputs.safetensors'))
    _, sm = build_scripted(builder, case['spec'])
    sm.load_state_dict(weights, strict=True)
    sm.eval()
    x, t, r, y, xn = inputs['x'], inputs['t'], inputs['r'], inputs['y'], inputs['x_nonsquare']
    with torch.no_grad():
        sq = sm.forward(x, t, r, y)
        sq_off = official_sm.forward(x, t, r, y)
        ns = sm.forward(xn, t, r, y)
        ns_off = official_sm.forward(xn, t, r, y)
        grid = sm.forward_intermediates(xn, t, r, y)['rope_grid']
    h, w = xn.shape[2] // case['config']['patchSize'], xn.shape[3] // case['config']['patchSize']
    n = torch.arange(h * w)
    return {
        'square_equals_official': bool(torch.equal(sq, sq_off)),
        'nonsquare_diff_vs_official': max_abs(ns, ns_off),
        'grid_is_col_row': bool(torch.equal(grid, torch.stack([n % w, n // w]))),
        'grid_shape': list(grid.shape),
    }


def check_against_reference(builder, ref, case, seed):
    """Scripted spec vs the eager reference, same random weights (strict load both ways)."""
    spec, cfg = case['spec'], case['config']
    eager, sm = build_scripted(builder, spec)
    refm = reference_model(ref, case).eval()
    weights = random_weights(refm, seed)
    rep = {'keys': key_report(spec, {k: list(v.shape) for k, v in refm.state_dict().items()})}
    sm.load_state_dict(weights, strict=True)
    refm.load_state_dict(weights, strict=True)
    sm.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    B, C, p = 3, cfg['inChannels'], cfg['patchSize']
    t = torch.rand(B, generator=gen) * 0.9 + 0.05
    r = t * torch.rand(B, generator=gen)
    r[1] = t[1]
    if cfg['variant'] == 't2i':
        cond = torch.randn(B, 5, cfg['capFeatDim'], generator=gen)
    else:
        # the last row of the label table: the null class when there is one (class_dropout_prob > 0)
        rows = cfg['numClasses'] + (1 if cfg['classDropoutProb'] > 0 else 0)
        cond = torch.tensor([3, rows - 1, 7]) % rows
    errs = {}
    with torch.no_grad():
        for tag, (H, W) in (('square', (4 * p, 4 * p)), ('nonsquare', (4 * p, 6 * p))):
            x = torch.randn(B, C, H, W, generator=gen)
            o, h = sm.forward_with_zs(x, t, r, cond)
            ro, rh = refm(x, t, r, cond, return_zs=True)
            errs['out_' + tag] = max_abs(o, ro)
            errs['h_proj_' + tag] = max_abs(h, rh)
            errs['out_scale_' + tag] = float(ro.abs().max().item())
            if tag == 'square':
                inter = sm.forward_intermediates(x, t, r, cond)
                errs['intermediates_out_' + tag] = max_abs(inter['out'], ro)
    rep['errors'] = errs
    return rep


def count_reference_params(ref, official, variant):
    """Parameter count of the reference model built on the meta device (nothing allocated)."""
    patched = {}
    for cls in (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm):
        patched[cls] = cls.__init__
        cls.__init__ = functools.partialmethod(cls.__init__, device='meta')
    try:
        m = (ref.TiMT2I if variant == 't2i' else ref.TiM)(**official)
        return sum(p.numel() for p in m.parameters())
    finally:
        for cls, init in patched.items():
            cls.__init__ = init


def classify_init(t):
    if bool((t == 0).all()):
        return 'zeros'
    if bool((t == 1).all()):
        return 'ones'
    return 'random'


def check_init(builder, ref, case, seed):
    """The spec's InitSpec against the official initialize_weights (the reference runs it) and against itself."""
    spec = case['spec']
    m = builder.build(spec)
    init_from_spec(m, spec, seed)
    ours = dict(m.state_dict())
    torch.manual_seed(seed)
    official = dict(reference_model(ref, case).state_dict())
    problems = []
    checked = {'zeros': 0, 'ones': 0, 'normal': 0, 'xavier_uniform': 0}
    for key, shape, init in spec_state_entries(spec):
        kind = init['kind']
        checked[kind] += 1
        for who, t in (('spec', ours[key]), ('official', official[key])):
            cls = classify_init(t)
            want = kind if kind in ('zeros', 'ones') else 'random'
            if cls != want:
                problems.append(f'{who} {key}: {cls}, spec says {kind}')
                continue
            if want != 'random':
                continue
            std = expected_std(init)
            n = t.numel()
            got_std = float(t.double().std().item())
            got_mean = float(t.double().mean().item())
            if abs(got_std / std - 1) > 6 / math.sqrt(2 * n) + 0.01:
                problems.append(f'{who} {key}: std {got_std:.5g}, expected {std:.5g}')
            if abs(got_mean) > 6 * std / math.sqrt(n):
                problems.append(f'{who} {key}: mean {got_mean:.3g}')
            amax = float(t.abs().max().item())
            if kind == 'xavier_uniform':
                bound = math.sqrt(6.0 / (init['fanIn'] + init['fanOut']))
                if amax > bound * (1 + 1e-6):
                    problems.append(f'{who} {key}: max |w| {amax:.5g} exceeds the xavier bound {bound:.5g}')
            elif kind == 'normal' and n >= 200 and amax <= math.sqrt(3) * std:
                # a normal sample of this size almost surely has values beyond the equal-variance uniform's bound
                problems.append(f'{who} {key}: looks uniform, spec says normal')
    return {'problems': problems, 'checked': checked}


def main(argv):
    if len(argv) != 5 or argv[1] != 'check':
        sys.stderr.write(__doc__)
        return 2
    specs = json.load(open(argv[2]))
    golden_dir = argv[3]
    ref = load_reference(argv[4])
    torch.set_num_threads(1)
    builder = SpecBuilder()
    report = {'cases': {}}
    official_sm = None
    for name, case in specs.items():
        role = case.get('role')
        if role == 'golden':
            rep, official_sm = check_golden(builder, ref, case, golden_dir)
            rep['init'] = check_init(builder, ref, case, seed=11)
        elif role == 'rowcol':
            rep = check_rowcol(builder, case, golden_dir, official_sm)
        elif role == 'reference':
            rep = check_against_reference(builder, ref, case, seed=int(case.get('seed', 5)))
            if case['config']['variant'] == 't2i':
                rep['init'] = check_init(builder, ref, case, seed=13)
        elif role == 'count':
            rep = {'reference_params': count_reference_params(ref, case['official'], case['config']['variant'])}
        else:
            raise ValueError(f'{name}: unknown role {role}')
        report['cases'][name] = rep
    report['type_names'] = sorted(builder.classes)
    sys.stdout.write(json.dumps(report))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
