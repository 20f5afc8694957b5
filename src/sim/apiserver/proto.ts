/**
 * Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
 * the JSON form the rest of the server uses. kubectl's typed clients (`kubectl create service`,
 * `kubectl create namespace`) send protobuf; everything else sends JSON. Only the messages those
 * commands need are described here (Service, Namespace, DeleteOptions, ObjectMeta); responses
 * are always JSON, which those clients accept.
 * Pure: no I/O.
 */

export class ProtobufError extends Error {
  readonly code = 'FERRY_ERR_PROTOBUF';
  constructor(message: string) {
    super(message);
    this.name = 'ProtobufError';
  }
}

type FieldKind = 'string' | 'int' | 'bool' | 'bytes' | 'map' | 'time' | 'intOrString' | { msg: string };
interface FieldDesc {
  name: string;
  kind: FieldKind;
  repeated?: boolean;
  /** A pointer field in Go: its zero value is meaningful and kept. Other zero scalars mean "unset". */
  ptr?: boolean;
}
type MessageDesc = Record<number, FieldDesc>;

const f = (name: string, kind: FieldKind, repeated = false): FieldDesc => ({ name, kind, repeated });
const p = (name: string, kind: FieldKind): FieldDesc => ({ name, kind, ptr: true });

/** Field numbers from k8s.io/api and k8s.io/apimachinery generated.proto. */
const MESSAGES: Record<string, MessageDesc> = {
  Unknown: { 1: f('typeMeta', { msg: 'TypeMeta' }), 2: f('raw', 'bytes'), 3: f('contentEncoding', 'string'), 4: f('contentType', 'string') },
  TypeMeta: { 1: f('apiVersion', 'string'), 2: f('kind', 'string') },
  ObjectMeta: {
    1: f('name', 'string'),
    2: f('generateName', 'string'),
    3: f('namespace', 'string'),
    4: f('selfLink', 'string'),
    5: f('uid', 'string'),
    6: f('resourceVersion', 'string'),
    7: f('generation', 'int'),
    8: f('creationTimestamp', 'time'),
    9: f('deletionTimestamp', 'time'),
    10: p('deletionGracePeriodSeconds', 'int'),
    11: f('labels', 'map'),
    12: f('annotations', 'map'),
    13: f('ownerReferences', { msg: 'OwnerReference' }, true),
    14: f('finalizers', 'string', true),
  },
  OwnerReference: {
    5: f('apiVersion', 'string'),
    1: f('kind', 'string'),
    3: f('name', 'string'),
    4: f('uid', 'string'),
    6: p('controller', 'bool'),
    7: p('blockOwnerDeletion', 'bool'),
  },
  Service: { 1: f('metadata', { msg: 'ObjectMeta' }), 2: f('spec', { msg: 'ServiceSpec' }), 3: f('status', { msg: 'ServiceStatus' }) },
  ServiceSpec: {
    1: f('ports', { msg: 'ServicePort' }, true),
    2: f('selector', 'map'),
    3: f('clusterIP', 'string'),
    18: f('clusterIPs', 'string', true),
    4: f('type', 'string'),
    5: f('externalIPs', 'string', true),
    7: f('sessionAffinity', 'string'),
    8: f('loadBalancerIP', 'string'),
    9: f('loadBalancerSourceRanges', 'string', true),
    10: f('externalName', 'string'),
    11: f('externalTrafficPolicy', 'string'),
    12: f('healthCheckNodePort', 'int'),
    13: f('publishNotReadyAddresses', 'bool'),
    14: f('sessionAffinityConfig', { msg: 'SessionAffinityConfig' }),
    19: f('ipFamilies', 'string', true),
    17: f('ipFamilyPolicy', 'string'),
    20: p('allocateLoadBalancerNodePorts', 'bool'),
    21: f('loadBalancerClass', 'string'),
    22: f('internalTrafficPolicy', 'string'),
    23: f('trafficDistribution', 'string'),
  },
  ServicePort: {
    1: f('name', 'string'),
    2: f('protocol', 'string'),
    6: f('appProtocol', 'string'),
    3: f('port', 'int'),
    4: f('targetPort', 'intOrString'),
    5: f('nodePort', 'int'),
  },
  SessionAffinityConfig: { 1: f('clientIP', { msg: 'ClientIPConfig' }) },
  ClientIPConfig: { 1: p('timeoutSeconds', 'int') },
  ServiceStatus: { 1: f('loadBalancer', { msg: 'LoadBalancerStatus' }) },
  LoadBalancerStatus: { 1: f('ingress', { msg: 'LoadBalancerIngress' }, true) },
  LoadBalancerIngress: { 1: f('ip', 'string'), 2: f('hostname', 'string'), 3: f('ipMode', 'string') },
  Namespace: { 1: f('metadata', { msg: 'ObjectMeta' }), 2: f('spec', { msg: 'NamespaceSpec' }), 3: f('status', { msg: 'NamespaceStatus' }) },
  NamespaceSpec: { 1: f('finalizers', 'string', true) },
  NamespaceStatus: { 1: f('phase', 'string') },
  DeleteOptions: {
    1: p('gracePeriodSeconds', 'int'),
    2: f('preconditions', { msg: 'Preconditions' }),
    3: p('orphanDependents', 'bool'),
    4: f('propagationPolicy', 'string'),
    5: f('dryRun', 'string', true),
  },
  Preconditions: { 1: f('uid', 'string'), 2: f('resourceVersion', 'string') },
  Time: { 1: f('seconds', 'int'), 2: f('nanos', 'int') },
  IntOrString: { 1: f('type', 'int'), 2: f('intVal', 'int'), 3: f('strVal', 'string') },
  MapEntry: { 1: f('key', 'string'), 2: f('value', 'string') },
};

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new ProtobufError('truncated varint');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new ProtobufError('varint too long');
    }
  }
  bytes(): Uint8Array {
    const n = Number(this.varint());
    if (this.pos + n > this.buf.length) throw new ProtobufError('truncated length-delimited field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new ProtobufError(`unsupported wire type ${wire}`);
  }
}

function toInt(v: bigint): number {
  // int32/int64 are two's complement in 64 bits.
  return Number(BigInt.asIntN(64, v));
}

function decodeMessage(buf: Uint8Array, type: string): Record<string, unknown> {
  const desc = MESSAGES[type];
  if (!desc) throw new ProtobufError(`no protobuf description for ${type}`);
  const r = new Reader(buf);
  const out: Record<string, unknown> = {};
  const text = new TextDecoder();
  while (!r.done) {
    const tag = Number(r.varint());
    const num = tag >> 3;
    const wire = tag & 7;
    const fd = desc[num];
    if (!fd) {
      r.skip(wire);
      continue;
    }
    let value: unknown;
    const k = fd.kind;
    if (k === 'int' || k === 'bool') {
      if (wire === 2) {
        // packed repeated scalars
        const sub = new Reader(r.bytes());
        const list = (out[fd.name] as unknown[] | undefined) ?? [];
        while (!sub.done) list.push(k === 'bool' ? sub.varint() !== 0n : toInt(sub.varint()));
        out[fd.name] = list;
        continue;
      }
      const v = r.varint();
      value = k === 'bool' ? v !== 0n : toInt(v);
    } else if (k === 'string') {
      value = text.decode(r.bytes());
    } else if (k === 'bytes') {
      value = r.bytes();
    } else if (k === 'map') {
      const e = decodeMessage(r.bytes(), 'MapEntry');
      const m = (out[fd.name] as Record<string, string> | undefined) ?? {};
      m[String(e['key'] ?? '')] = String(e['value'] ?? '');
      out[fd.name] = m;
      continue;
    } else if (k === 'time') {
      const t = decodeMessage(r.bytes(), 'Time');
      value = new Date(Number(t['seconds'] ?? 0) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    } else if (k === 'intOrString') {
      const v = decodeMessage(r.bytes(), 'IntOrString');
      value = Number(v['type'] ?? 0) === 1 ? String(v['strVal'] ?? '') : Number(v['intVal'] ?? 0);
    } else {
      value = decodeMessage(r.bytes(), k.msg);
    }
    if (!fd.repeated && !fd.ptr && (value === '' || value === 0 || value === false)) continue;
    if (k === 'time' && value === '1970-01-01T00:00:00Z') continue;
    if (fd.repeated) {
      const list = (out[fd.name] as unknown[] | undefined) ?? [];
      list.push(value);
      out[fd.name] = list;
    } else {
      out[fd.name] = value;
    }
  }
  return out;
}

const MAGIC = [0x6b, 0x38, 0x73, 0x00]; // "k8s\0"

/** Decode a `k8s\0`-prefixed runtime.Unknown envelope into a JSON object with apiVersion/kind. */
export function decodeK8sProtobuf(body: Uint8Array): Record<string, unknown> {
  if (body.length < 4 || MAGIC.some((b, i) => body[i] !== b)) throw new ProtobufError('protobuf body does not start with the k8s magic number');
  const env = decodeMessage(body.subarray(4), 'Unknown');
  const tm = (env['typeMeta'] ?? {}) as Record<string, unknown>;
  const kind = String(tm['kind'] ?? '');
  if (!MESSAGES[kind] || kind === 'Unknown' || kind === 'TypeMeta') {
    throw new ProtobufError(`the simulator cannot decode protobuf for kind ${JSON.stringify(kind)}; send JSON`);
  }
  const raw = env['raw'];
  const obj = decodeMessage(raw instanceof Uint8Array ? raw : new Uint8Array(), kind);
  return { apiVersion: tm['apiVersion'], kind, ...obj };
}
