/**
 * Keeps the latest instance of a class alive, so that V8 keeps the class's hidden class (its map).
 *
 * V8 ties optimized code to the hidden classes it was optimized for, and a hidden class lives
 * only as long as some object has it: the classes a full sync makes its working state from
 * (the compile's address lists and claims, the encoder's Writer) have no instance between two
 * full syncs, so the first major collection after one took their hidden classes, and with them
 * the optimized code of every function that had seen them — the next full sync compiled and
 * encoded in the interpreter again, two to three times slower (docs/memory.md, seventeenth
 * pass). An object literal made a few times a sync fared no better (keeping the latest ended
 * its code's deoptimizations too). The object kept is whichever was made last; what it holds is
 * the caller's to keep small.
 */
const latest = new Map<unknown, object>();

/** `key`: which one this is; an instance of a class by default, a name for an object literal. */
export function keepShape<T extends object>(x: T, key: unknown = x.constructor): T {
  latest.set(key, x);
  return x;
}
