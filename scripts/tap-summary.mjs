#!/usr/bin/env node
// Reads a TAP stream (tap --reporter=tap) on stdin, echoes it, and ends with the plain
// summary line CI reads: "N passed, N failed, N skipped". A test is a leaf subtest (a named
// t.test with no subtests of its own); assertions are not counted. A file that crashed before
// reporting any subtest, or failed after all its subtests passed (e.g. in teardown), counts as
// one failure. Top-level lines outside any file (the leak check) count as tests.
import { createInterface } from 'node:readline';

let passed = 0, failed = 0, skipped = 0;
const failures = [];
/** Open subtests: indent of their "# Subtest:" line, name, whether a child subtest completed, whether a child failed. */
const stack = [];
const rl = createInterface({ input: process.stdin });

function count(ok, skip, name) {
  if (skip) skipped++;
  else if (ok) passed++;
  else { failed++; failures.push(name); }
}

rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  let m = /^( *)# Subtest: (.*)$/.exec(line);
  if (m) {
    stack.push({ indent: m[1].length, name: m[2], hadChild: false, childFailed: false });
    return;
  }
  m = /^( *)(not ok|ok) \d+ - (.*)$/.exec(line);
  if (!m) return;
  const indent = m[1].length, ok = m[2] === 'ok', rest = m[3];
  const skip = /# (SKIP|TODO)\b/i.test(rest);
  const top = stack[stack.length - 1];
  if (top && top.indent === indent) {
    stack.pop();
    const parent = stack[stack.length - 1];
    const label = parent ? `${parent.name} > ${top.name}` : top.name;
    if (!top.hadChild) count(ok, skip, label);
    else if (!ok && !top.childFailed) count(false, false, `${label} (failed outside its subtests)`);
    if (parent) {
      parent.hadChild = true;
      if (!ok) parent.childFailed = true;
    }
    return;
  }
  if (indent === 0 && stack.length === 0) { count(ok, skip, rest); return; }
  if (skip && top && indent === top.indent + 4) {
    count(true, true, rest);
    top.hadChild = true;
  }
});
rl.on('close', () => {
  if (failures.length) {
    process.stdout.write('\nFailed:\n' + failures.map((f) => '  - ' + f).join('\n') + '\n');
  }
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exitCode = failed > 0 ? 1 : 0;
});
