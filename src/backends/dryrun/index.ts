/**
 * The dry-run backend (`ferry --dry-run`): programs nothing; prints every synced table as one
 * JSON line so tests and curious operators can read what ferry planned:
 *   {"sync":N,"full":bool,"changed":[keys],"tableChanged":bool,"families":{"4":{...},"6":{...}}}
 * Must never touch the kernel.
 */
import type { Backend, ProxyTables, SyncChanges } from '../../plan/types.js';
import { serializeTables } from './serialize.js';

export interface DryRunLine {
  readonly sync: number;
  readonly full: boolean;
  readonly changed: readonly string[];
  readonly tableChanged: boolean;
  readonly families: ReturnType<typeof serializeTables>;
}

export class DryRunBackend implements Backend {
  readonly name = 'dry-run';
  private n = 0;

  constructor(private readonly write: (line: string) => void = (line) => void process.stdout.write(line)) {}

  async sync(_prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
    const line: DryRunLine = {
      sync: ++this.n,
      full: changes.full,
      changed: [...changes.changed].sort(),
      tableChanged: changes.tableChanged,
      families: serializeTables(next),
    };
    this.write(JSON.stringify(line) + '\n');
  }

  async intact(): Promise<boolean> {
    return true;
  }

  async cleanup(): Promise<void> {
    /* nothing was installed */
  }
}
