/**
 * Keeps the latest instance of a class alive, so that V8 keeps the class's hidden class (its map).
 *
 * V8 ties optimized code to the hidden classes it was optimized for, and a hidden class lives
 * only as long as some object has it: the classes a full sync makes its working state from
 * (the compile's address lists and claims, the encoder's Writer) have no instance between two
 * full syncs, so the first major collection after one took their hidden classes, and with them
 * the optimized code of every function that had seen them — the next full sync compiled and
 * encoded in the interpreter again, two to three times slower (docs/memory.md, seventeenth
 * pass). The instance kept is whichever was made last; what it holds is the caller's to keep
 * small.
 */
const latest = new Map<unknown, object>();

export function keepShape(x: object): void {
  latest.set(x.constructor, x);
}
