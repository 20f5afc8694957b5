import t from 'tap';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CommandError, run } from '../../../src/util/exec.js';

const EXEC = join(dirname(fileURLToPath(import.meta.url)), '../../../src/util/exec.js');

t.test('run: a command that exits non-zero rejects with its code and stderr', async (t) => {
  const e = await run(['sh', '-c', 'echo bad >&2; exit 3']).catch((x: unknown) => x);
  t.ok(e instanceof CommandError);
  t.match((e as CommandError).message, /bad/);
  const r = await run(['sh', '-c', 'exit 3'], { allowFailure: true });
  t.equal(r.exitCode, 3);
});

// With every file descriptor in use, spawn fails before any pipe exists. That used to surface
// as an unhandled 'error' event and end the process (userspace mode at 44k Services ran out of
// descriptors and died on its next `ip` call).
t.test('run: out of file descriptors, a spawn rejects instead of ending the process', async (t) => {
  const script = `
    import { openSync } from 'node:fs';
    const { run } = await import(${JSON.stringify(EXEC)});
    let held = 0;
    try { for (;;) { openSync('/dev/null', 'r'); held++; } } catch (e) { if (e.code !== 'EMFILE') throw e; }
    const r = await run(['true']).then(() => 'resolved', (e) => 'rejected: ' + e.message);
    console.log(JSON.stringify({ held, r }));
  `;
  const p = spawnSync('prlimit', ['--nofile=64:64', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  t.equal(p.status, 0, `the process survives (stderr: ${p.stderr})`);
  const out = JSON.parse(p.stdout.trim().split('\n').pop() ?? '{}') as { held?: number; r?: string };
  t.ok((out.held ?? 0) > 0, 'the descriptors were used up first');
  t.match(out.r ?? '', /^rejected: .*EMFILE/, 'the spawn rejects with EMFILE');
});

t.test('run: input in pieces reaches the child whole and in order, also past the pipe buffer', async (t) => {
  // ~4 MB in pieces of varying size (a line may span pieces here; the runner does not care), with
  // multi-byte characters so that a read can split one.
  const pieces: string[] = [];
  let expected = '';
  for (let i = 0; i < 20_000; i++) {
    const p = `line ${i} é€ ${'x'.repeat(i % 300)}${i % 3 === 0 ? '\n' : ''}`;
    pieces.push(p);
    expected += p;
  }
  const r = await run(['cat'], { input: pieces });
  t.equal(r.exitCode, 0);
  t.equal(r.stdout.length, expected.length, 'as many characters as written');
  t.ok(r.stdout === expected, 'the same text, in order');
});

t.test('run: onStdoutLine gets every line, none held in stdout', async (t) => {
  const lines: string[] = [];
  for (let i = 0; i < 50_000; i++) lines.push(`:CHAIN-${i} é€ - [0:0]`);
  const seen: string[] = [];
  const r = await run(['cat'], { input: lines.join('\n') + '\nlast line without newline', onStdoutLine: (l) => seen.push(l) });
  t.equal(r.stdout, '', 'nothing collected');
  t.equal(seen.length, lines.length + 1);
  t.same(seen.slice(0, lines.length), lines, 'each line whole, multi-byte characters intact');
  t.equal(seen.at(-1), 'last line without newline', 'the unterminated last line too');
  const empty: string[] = [];
  await run(['true'], { onStdoutLine: (l) => empty.push(l) });
  t.same(empty, [], 'no output, no line');
});

t.test('run: an onStdoutLine callback that throws rejects the run (the child is stopped), not the process', async (t) => {
  const boom = new Error('bad line');
  let seen = 0;
  const e = await run(['sh', '-c', 'echo one; echo two; exec sleep 5'], {
    onStdoutLine: (l) => {
      seen++;
      if (l === 'two') throw boom;
    },
  }).catch((x: unknown) => x);
  t.equal(e, boom, 'the callback\'s own error');
  t.equal(seen, 2, 'no line after it');
});
