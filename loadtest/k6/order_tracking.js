// Order tracking over k6 WebSockets (k6/ws): each virtual user places an order, follows it, and
// moves it through paid, packed, shipped and delivered; every status must arrive, once, in
// order, with seq increasing by one.
// Usage: ADMIN_TOKEN=... k6 run loadtest/k6/order_tracking.js   (VUS, DURATION to size it)
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { Rate, Trend } from 'k6/metrics';
import ws from 'k6/ws';
import { ADMIN_TOKEN, RUN, WS_URL, checkout, createCart, json, pay, paymentsCredential, putSku, setLine, setStatus, wsTicket } from './lib.js';

const STEPS = ['paid', 'packed', 'shipped', 'delivered'];
const inOrder = new Rate('tracking_all_statuses_in_order');
const statusLatency = new Trend('tracking_status_latency', true);

export const options = {
  scenarios: {
    track: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '20', 10),
      duration: __ENV.DURATION || '30s',
    },
  },
  thresholds: {
    tracking_all_statuses_in_order: ['rate==1.0'],
    checks: ['rate==1.0'],
    tracking_status_latency: ['p(95)<500', 'p(99)<1000'],
    http_req_failed: ['rate<0.01'],
  },
};

export function setup() {
  if (!ADMIN_TOKEN) fail('set ADMIN_TOKEN');
  const sku = `tracked-${RUN}`;
  putSku(sku, 1000000);
  return { sku, psp: paymentsCredential() };
}

export default function (data) {
  const cart = createCart();
  if (!cart) return;
  setLine(cart, data.sku, 1);
  const order = json(checkout(cart));
  if (!check(order, { 'order placed': (o) => !!o && o.status === 'placed' })) return;
  const orderId = order.order_id;

  const seen = [];
  let lastSeq = 0;
  let step = 0;
  let sentAt = 0;
  let timedOut = false;
  // k6/ws blocks this virtual user until the socket closes.
  ws.connect(`${WS_URL}/v1/ws/orders/${orderId}?ticket=${wsTicket(cart, orderId)}`, null, (socket) => {
    // Makes the next move once the previous one was seen, so every status has its own message.
    const next = () => {
      if (step >= STEPS.length) {
        socket.close();
        return;
      }
      const status = STEPS[step];
      step += 1;
      sentAt = Date.now();
      const response = status === 'paid' ? pay(data.psp, orderId) : setStatus(orderId, status);
      check(response, { [`move to ${status}: 200`]: (r) => r.status === 200 });
    };
    socket.on('message', (text) => {
      const message = JSON.parse(text);
      if (message.type === 'snapshot') {
        seen.push(message.order.status);
        lastSeq = message.seq;
      } else {
        statusLatency.add(Date.now() - sentAt);
        seen.push(message.seq === lastSeq + 1 ? message.status : `gap-before-${message.status}`);
        lastSeq = message.seq;
      }
      next();
    });
    socket.on('error', (error) => console.warn(`order ${orderId}: WebSocket error ${error.error()}`));
    socket.setTimeout(() => {
      timedOut = true;
      socket.close();
    }, 10000);
  });
  const ok = seen.join() === ['placed', ...STEPS].join();
  // k6 closes open sockets when the scenario's time is up: not the server's doing.
  if (!ok && !timedOut && exec.scenario.progress >= 1) return;
  if (!ok) console.warn(`order ${orderId}: saw ${seen.join()}${timedOut ? ' (timed out)' : ''}`);
  inOrder.add(ok);
}
