/**
 * IPv4 addresses in their canonical dotted-quad text (what the model keeps, src/model/addr.ts),
 * read without regular expressions or objects: the model validates every endpoint address of
 * every slice, and a full nftables compile deduplicates 440,000 of them at 44k Services.
 * Pure; no I/O.
 */

/**
 * The 32-bit value of a canonical dotted-quad IPv4 address (no leading zeros, each part ≤ 255),
 * or -1 for any other string — including non-canonical spellings of an address, which must not
 * meet their canonical twin here.
 */
export function canonicalIPv4(s: string): number {
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      dots++;
      part = 0;
      digits = 0;
      continue;
    }
    const d = c - 0x30;
    if (d < 0 || d > 9 || (digits > 0 && part === 0)) return -1;
    part = part * 10 + d;
    if (++digits > 3 || part > 255) return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + part;
}
