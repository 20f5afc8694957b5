import t from 'tap';
import { realClock } from '../../../src/sync/clock.js';

t.test('realClock: a timer due now runs before a 1 ms timer, and either can be cancelled', async (t) => {
  const order: string[] = [];
  await new Promise<void>((done) => {
    realClock.setTimeout(() => {
      order.push('1ms');
      done();
    }, 1);
    realClock.setTimeout(() => order.push('now'), 0);
    const cancelledNow = realClock.setTimeout(() => order.push('cancelled now'), 0);
    const cancelledLater = realClock.setTimeout(() => order.push('cancelled later'), 1);
    realClock.clearTimeout(cancelledNow);
    realClock.clearTimeout(cancelledLater);
  });
  t.same(order, ['now', '1ms']);
});
