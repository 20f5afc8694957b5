#!/usr/bin/env node
// Reads a TAP stream (tap --reporter=tap) on stdin, echoes it, and ends with the plain
// summary line CI reads: "N passed, N failed, N skipped". A test is a named subtest directly
// inside a test file; a file that crashed before reporting any subtest counts as one failure.
import { createInterface } from 'node:readline';

let passed = 0, failed = 0, skipped = 0;
let inFilePoints = 0;
let fileFailed = false;
const failures = [];
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  let m = /^ {4}(not ok|ok) \d+ - (.*)$/.exec(line);
  if (m) {
    inFilePoints++;
    if (/# SKIP/i.test(m[2])) skipped++;
    else if (m[1] === 'ok') passed++;
    else { failed++; fileFailed = true; failures.push(m[2]); }
    return;
  }
  m = /^(not ok|ok) \d+ - (.*)$/.exec(line);
  if (m) {
    if (inFilePoints === 0) {
      if (m[1] === 'ok') passed++;
      else { failed++; failures.push(m[2]); }
    } else if (m[1] === 'not ok' && !fileFailed) {
      // the file failed after its subtests (e.g. a leak check or a crash in teardown)
      failed++; failures.push(m[2]);
    }
    inFilePoints = 0;
    fileFailed = false;
  }
});
rl.on('close', () => {
  const extra = process.argv[2] ? Number(process.argv[2]) : 0;
  failed += extra;
  if (failures.length) {
    process.stdout.write('\nFailed:\n' + failures.map((f) => '  - ' + f).join('\n') + '\n');
  }
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exitCode = failed > 0 ? 1 : 0;
});
