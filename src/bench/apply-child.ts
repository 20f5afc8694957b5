/**
 * Runs inside a benchmark namespace (`ip netns exec fybX node apply-child.js`) so that the
 * native addon (which acts on the calling process's namespace) programs that namespace. Reads
 * one JSON command on stdin: a list of steps, each a file to apply one way (a script, or an
 * encoded nf_tables batch for `nft-netlink`); applies them in
 * order, times each one, prints one JSON line with the results. Stops at the first failure.
 * Not a library: the harness's apply phase is its only caller.
 */
import { readFileSync } from 'node:fs';
import { loadNative, nativeLoadError } from '../native/index.js';
import { addonNft, execNft, type NftRunner } from '../backends/kernel/nft.js';
import { run } from '../util/exec.js';

/** `nft-netlink`: the file holds an encoded nf_tables batch (netlink.ts), sent as is by the addon. */
export type ApplyVia = 'nft-netlink' | 'nft-addon' | 'nft-exec' | 'iptables-restore';

export interface ApplyStep {
  readonly label: string;
  readonly via: ApplyVia;
  readonly file: string;
}

export interface ApplyStepResult {
  readonly label: string;
  readonly ms: number;
  readonly ok: boolean;
  readonly error?: string;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

async function main(): Promise<void> {
  const cmd = JSON.parse(await readStdin()) as { steps: ApplyStep[] };
  let addonRunner: NftRunner | undefined;
  const execRunner = execNft();
  const results: ApplyStepResult[] = [];
  for (const step of cmd.steps) {
    const bytes = readFileSync(step.file);
    const text = step.via === 'nft-netlink' ? '' : bytes.toString('utf8');
    const t0 = performance.now();
    try {
      if (step.via === 'nft-netlink') {
        const addon = loadNative();
        if (!addon?.nfnlBatch) throw new Error(`native addon without nf_tables netlink support: ${nativeLoadError()?.message ?? 'rebuild native/'}`);
        const r = await addon.nfnlBatch(bytes);
        if (!r.ok) throw new Error(r.sysError || `kernel refused the batch: ${r.errors.map((e) => `seq ${e.seq} errno ${e.errno} ${e.message}`).join('; ')}`);
      } else if (step.via === 'nft-addon') {
        if (!addonRunner) {
          const addon = loadNative();
          if (!addon) throw new Error(`native addon not loaded: ${nativeLoadError()?.message ?? 'unknown'}`);
          addonRunner = addonNft(addon);
        }
        await addonRunner.apply(text);
      } else if (step.via === 'nft-exec') {
        await execRunner.apply(text);
      } else {
        await run(['iptables-restore', '-w', '5', '--noflush'], { input: text });
      }
      results.push({ label: step.label, ms: performance.now() - t0, ok: true });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      results.push({ label: step.label, ms: performance.now() - t0, ok: false, error: msg.slice(0, 500) });
      break;
    }
  }
  process.stdout.write(JSON.stringify({ results }) + '\n');
}

main().catch((e: unknown) => {
  process.stdout.write(JSON.stringify({ results: [], fatal: e instanceof Error ? e.message : String(e) }) + '\n');
  process.exitCode = 1;
});
