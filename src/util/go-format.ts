/**
 * Go's fmt `%0.Nf` for a non-negative finite double: its exact binary value rounded to N
 * decimals, half to even. JavaScript's toFixed rounds an exact tie up instead, so the two differ
 * only there — for kube-proxy's probabilities, 1/2048 (0.00048828125: Go 0.0004882812).
 */
export function goFixed(x: number, digits: number): string {
  const js = x.toFixed(digits);
  if (!(x > 0) || !Number.isFinite(x)) return js;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const expBits = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mantissa = expBits === 0 ? fraction : fraction | (1n << 52n);
  const exp = expBits === 0 ? -1074 : expBits - 1075;
  if (exp >= 0) return js; // an integer: no tie
  const den = 1n << BigInt(-exp);
  const num = mantissa * 10n ** BigInt(digits);
  const q = num / den;
  const r = num % den;
  // A tie whose lower neighbour is even: Go keeps it, toFixed went up.
  if (2n * r !== den || q % 2n !== 0n) return js;
  const s = q.toString().padStart(digits + 1, '0');
  return digits === 0 ? s : `${s.slice(0, -digits)}.${s.slice(-digits)}`;
}
