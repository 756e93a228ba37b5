#!/usr/bin/env node
/**
 * The `tim` command line: `tim info`, `convert`, `train`, `sample`, `eval`, `preprocess`, `demo`. Exit status:
 * 0 success, 1 failure while running (unreadable file, shape mismatch...), 2 bad usage (unknown
 * command or option, missing argument), with a message on stderr.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError, commandHelp, parseArgs, type CommandSpec, type Parsed } from './args.js';
import { INFO, runInfo } from './info.js';
import { CONVERT, runConvert } from './convert.js';
import { TRAIN, runTrain } from './train.js';
import { EVAL, runEval } from './eval.js';
import { DEMO, runDemoCommand } from './demo/command.js';
import { SAMPLE, runSample } from './sample.js';
import { SAMPLE_T2I, isTextToImageArgs, parseSampleT2IArgs, runSampleT2I } from './sample_t2i.js';
import { PREPROCESS, runPreprocess } from './preprocess.js';

const PROG = 'tim';
// A command may be async (train); main() then returns its Promise.
const COMMANDS: Record<string, { spec: CommandSpec; run: (p: Parsed, print: (s: string) => void) => number | Promise<number> }> = {
  info: { spec: INFO, run: runInfo },
  convert: { spec: CONVERT, run: runConvert },
  train: { spec: TRAIN, run: runTrain },
  sample: { spec: SAMPLE, run: runSample },
  eval: { spec: EVAL, run: runEval },
  preprocess: { spec: PREPROCESS, run: runPreprocess },
  demo: { spec: DEMO, run: runDemoCommand },
};

function mainHelp(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const u = Math.max(16, ...Object.values(COMMANDS).map(({ spec }) => spec.usage.length));
  return [
    `Usage: ${PROG} <command> [options]`,
    '',
    'Transition Models (TiM) on libtorch.',
    '',
    'Commands:',
    ...Object.values(COMMANDS).map(({ spec }) => `  ${spec.name.padEnd(w)}  ${spec.usage.padEnd(u)}  ${spec.brief}`),
    '',
    `Run '${PROG} <command> --help' for a command's options.`,
  ].join('\n');
}

/** Runs the CLI on `argv` (without node and script); returns the exit status. */
export function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s + '\n'), err: (s: string) => void = (s) => process.stderr.write(s + '\n')): number | Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    const topic = cmd === 'help' ? rest[0] : undefined;
    if (topic !== undefined && COMMANDS[topic]) out(commandHelp(PROG, COMMANDS[topic]!.spec));
    else out(mainHelp());
    return cmd === undefined ? 2 : 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    err(`${PROG}: unknown command '${cmd}'\n\n${mainHelp()}`);
    return 2;
  }
  // `tim sample` with --prompt / --prompts / --text-encoder is the text-to-image command (its own
  // flags, and --prompt may repeat); everything else is the class-to-image one
  const t2i = cmd === 'sample' && isTextToImageArgs(rest);
  const spec = t2i ? SAMPLE_T2I : c.spec;
  const fail = (e: unknown): number => {
    if (e instanceof UsageError) {
      err(`${PROG} ${cmd}: ${e.message}\n\n${commandHelp(PROG, spec)}`);
      return 2;
    }
    const code = (e as { code?: unknown }).code;
    err(`${PROG} ${cmd}: ${(e as Error).message}${typeof code === 'string' ? ` [${code}]` : ''}`);
    return 1;
  };
  try {
    if (t2i) {
      const p = parseSampleT2IArgs(rest);
      if (p.options.help) {
        out(commandHelp(PROG, SAMPLE_T2I));
        return 0;
      }
      return runSampleT2I(p, out);
    }
    const p = parseArgs(rest, c.spec);
    if (p.options.help) {
      out(commandHelp(PROG, c.spec));
      return 0;
    }
    const r = c.run(p, out);
    return r instanceof Promise ? r.catch(fail) : r;
  } catch (e) {
    return fail(e);
  }
}

// Run when executed (node dist/cli/tim.js, the `tim` bin, or tsx lib/cli/tim.ts), not when imported.
const self = fileURLToPath(import.meta.url);
let invoked = '';
try {
  invoked = process.argv[1] ? realpathSync(process.argv[1]) : '';
} catch {
  // argv[1] is not a file (e.g. node -e): imported, not executed
}
if (invoked === self) {
  const status = main(process.argv.slice(2));
  if (typeof status === 'number') process.exitCode = status;
  else void status.then((c) => { process.exitCode = c; });
}
