/**
 * Decoding a request body the way the real server's typed decoder does: wrong JSON types are
 * a 400 ("cannot unmarshal ..."), nulls mean "unset", and fields the type does not have are
 * dropped — or rejected / warned about according to `fieldValidation` (Strict | Warn | Ignore).
 * After decoding, registries may trust the types of every field the schema describes.
 * Pure: no I/O.
 */
import { isRecord, type JsonObject } from './objects.js';

export type Schema =
  | 'string'
  | 'int'
  | 'number'
  | 'bool'
  | 'intOrString'
  | 'stringMap'
  | 'any'
  | { list: Schema }
  | { obj: Record<string, Schema>; open?: boolean };

export class DecodeError extends Error {
  readonly code = 'FERRY_ERR_DECODE';
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

export interface DecodeResult {
  value: JsonObject;
  /** Dotted paths of fields the schema does not know, e.g. `spec.foo`. */
  unknown: string[];
  /** Fields given twice in the raw JSON are not detectable after JSON.parse; kept for symmetry. */
}

function jsonType(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (isRecord(v)) return 'object';
  if (typeof v === 'number') return `number ${v}`;
  return typeof v;
}

function goType(s: Schema): string {
  if (typeof s === 'string') {
    return { string: 'string', int: 'int32', number: 'float64', bool: 'bool', intOrString: 'IntOrString', stringMap: 'map[string]string', any: 'interface {}' }[s];
  }
  return 'list' in s ? '[]' + goType(s.list) : 'struct';
}

export function decode(body: unknown, schema: Schema & { obj: Record<string, Schema> }, kind: string): DecodeResult {
  const unknown: string[] = [];
  const fail = (path: string, v: unknown, s: Schema): never => {
    throw new DecodeError(
      `${kind} in version "v1" cannot be handled as a ${kind}: json: cannot unmarshal ${jsonType(v).replace(/ .*/, '')} into Go struct field ${kind}.${path} of type ${goType(s)}`,
    );
  };
  const walk = (v: unknown, s: Schema, path: string): unknown => {
    if (v === null || v === undefined) return undefined;
    if (s === 'any') return v;
    if (s === 'string') return typeof v === 'string' ? v : fail(path, v, s);
    if (s === 'bool') return typeof v === 'boolean' ? v : fail(path, v, s);
    if (s === 'int') return typeof v === 'number' && Number.isInteger(v) ? v : fail(path, v, s);
    if (s === 'number') return typeof v === 'number' ? v : fail(path, v, s);
    if (s === 'intOrString') {
      if (typeof v === 'string') return v;
      return typeof v === 'number' && Number.isInteger(v) ? v : fail(path, v, s);
    }
    if (s === 'stringMap') {
      if (!isRecord(v)) return fail(path, v, s);
      const out: Record<string, string> = {};
      for (const [k, x] of Object.entries(v)) {
        if (x === null) continue;
        if (typeof x !== 'string') fail(`${path}`, x, 'string');
        out[k] = x as string;
      }
      return out;
    }
    if ('list' in s) {
      if (!Array.isArray(v)) return fail(path, v, s);
      return v.map((e) => {
        const d = walk(e, s.list, path);
        // A null element decodes to the zero value of the element type.
        return d === undefined ? zero(s.list) : d;
      });
    }
    if (!isRecord(v)) return fail(path, v, s);
    const out: JsonObject = {};
    for (const [k, x] of Object.entries(v)) {
      const cs = s.obj[k];
      const cp = path ? `${path}.${k}` : k;
      if (!cs) {
        if (s.open) {
          if (x !== null) out[k] = x;
        } else {
          unknown.push(cp);
        }
        continue;
      }
      const d = walk(x, cs, cp);
      if (d !== undefined) out[k] = d;
    }
    return out;
  };
  if (!isRecord(body)) throw new DecodeError(`the body of the request must be a JSON object`);
  const value = walk(body, schema, '') as JsonObject;
  return { value, unknown };
}

function zero(s: Schema): unknown {
  if (s === 'string') return '';
  if (s === 'int' || s === 'number') return 0;
  if (s === 'bool') return false;
  if (s === 'any' || s === 'intOrString') return null;
  if (s === 'stringMap') return {};
  return 'list' in s ? [] : {};
}

// ---- schemas of the served kinds ----

const ownerReference: Schema = {
  obj: { apiVersion: 'string', kind: 'string', name: 'string', uid: 'string', controller: 'bool', blockOwnerDeletion: 'bool' },
};

export const objectMeta: Schema = {
  obj: {
    name: 'string',
    generateName: 'string',
    namespace: 'string',
    selfLink: 'string',
    uid: 'string',
    resourceVersion: 'string',
    generation: 'int',
    creationTimestamp: 'string',
    deletionTimestamp: 'string',
    deletionGracePeriodSeconds: 'int',
    labels: 'stringMap',
    annotations: 'stringMap',
    ownerReferences: { list: ownerReference },
    finalizers: { list: 'string' },
    managedFields: 'any',
  },
};

const top = (spec: Record<string, Schema>): Record<string, Schema> => ({ apiVersion: 'string', kind: 'string', metadata: objectMeta, ...spec });

const condition: Schema = {
  obj: { type: 'string', status: 'string', observedGeneration: 'int', lastTransitionTime: 'string', lastProbeTime: 'string', lastHeartbeatTime: 'string', reason: 'string', message: 'string' },
};

const portStatus: Schema = { obj: { port: 'int', protocol: 'string', error: 'string' } };

export const serviceSchema = {
  obj: top({
    spec: {
      obj: {
        type: 'string',
        ports: {
          list: { obj: { name: 'string', protocol: 'string', appProtocol: 'string', port: 'int', targetPort: 'intOrString', nodePort: 'int' } },
        },
        selector: 'stringMap',
        clusterIP: 'string',
        clusterIPs: { list: 'string' },
        externalIPs: { list: 'string' },
        sessionAffinity: 'string',
        sessionAffinityConfig: { obj: { clientIP: { obj: { timeoutSeconds: 'int' } } } },
        loadBalancerIP: 'string',
        loadBalancerSourceRanges: { list: 'string' },
        loadBalancerClass: 'string',
        externalName: 'string',
        externalTrafficPolicy: 'string',
        internalTrafficPolicy: 'string',
        healthCheckNodePort: 'int',
        publishNotReadyAddresses: 'bool',
        ipFamilies: { list: 'string' },
        ipFamilyPolicy: 'string',
        allocateLoadBalancerNodePorts: 'bool',
        trafficDistribution: 'string',
      },
    },
    status: {
      obj: {
        loadBalancer: {
          obj: { ingress: { list: { obj: { ip: 'string', hostname: 'string', ipMode: 'string', ports: { list: portStatus } } } } },
        },
        conditions: { list: condition },
      },
    },
  }),
} satisfies Schema;

const containerPort: Schema = { obj: { name: 'string', hostPort: 'int', containerPort: 'int', protocol: 'string', hostIP: 'string' } };

export const podSchema = {
  obj: top({
    spec: {
      open: true,
      obj: {
        nodeName: 'string',
        hostNetwork: 'bool',
        terminationGracePeriodSeconds: 'int',
        restartPolicy: 'string',
        containers: { list: { open: true, obj: { name: 'string', image: 'string', ports: { list: containerPort } } } },
        initContainers: { list: { open: true, obj: { name: 'string', image: 'string', ports: { list: containerPort } } } },
      },
    },
    status: {
      open: true,
      obj: {
        phase: 'string',
        conditions: { list: condition },
        podIP: 'string',
        podIPs: { list: { obj: { ip: 'string' } } },
        hostIP: 'string',
        hostIPs: { list: { obj: { ip: 'string' } } },
        containerStatuses: { list: { open: true, obj: { name: 'string', ready: 'bool', restartCount: 'int', started: 'bool' } } },
        reason: 'string',
        message: 'string',
        startTime: 'string',
      },
    },
  }),
} satisfies Schema;

export const nodeSchema = {
  obj: top({
    spec: {
      obj: {
        podCIDR: 'string',
        podCIDRs: { list: 'string' },
        providerID: 'string',
        unschedulable: 'bool',
        taints: { list: { obj: { key: 'string', value: 'string', effect: 'string', timeAdded: 'string' } } },
        externalID: 'string',
        configSource: 'any',
      },
    },
    status: {
      open: true,
      obj: {
        addresses: { list: { obj: { type: 'string', address: 'string' } } },
        conditions: { list: condition },
        nodeInfo: { open: true, obj: { kubeletVersion: 'string', osImage: 'string', kernelVersion: 'string', containerRuntimeVersion: 'string' } },
        phase: 'string',
      },
    },
  }),
} satisfies Schema;

export const namespaceSchema = {
  obj: top({
    spec: { obj: { finalizers: { list: 'string' } } },
    status: { obj: { phase: 'string', conditions: { list: condition } } },
  }),
} satisfies Schema;

export const endpointSliceSchema = {
  obj: top({
    addressType: 'string',
    endpoints: {
      list: {
        obj: {
          addresses: { list: 'string' },
          conditions: { obj: { ready: 'bool', serving: 'bool', terminating: 'bool' } },
          hostname: 'string',
          targetRef: {
            obj: { kind: 'string', namespace: 'string', name: 'string', uid: 'string', apiVersion: 'string', resourceVersion: 'string', fieldPath: 'string' },
          },
          deprecatedTopology: 'stringMap',
          nodeName: 'string',
          zone: 'string',
          hints: { obj: { forZones: { list: { obj: { name: 'string' } } }, forNodes: { list: { obj: { name: 'string' } } } } },
        },
      },
    },
    ports: { list: { obj: { name: 'string', protocol: 'string', port: 'int', appProtocol: 'string' } } },
  }),
} satisfies Schema;

export const serviceCIDRSchema = {
  obj: top({
    spec: { obj: { cidrs: { list: 'string' } } },
    status: { obj: { conditions: { list: condition } } },
  }),
} satisfies Schema;

export const deleteOptionsSchema = {
  obj: {
    kind: 'string',
    apiVersion: 'string',
    gracePeriodSeconds: 'int',
    preconditions: { obj: { uid: 'string', resourceVersion: 'string' } },
    orphanDependents: 'bool',
    propagationPolicy: 'string',
    dryRun: { list: 'string' },
    ignoreStoreReadErrorWithClusterBreakingPotential: 'bool',
  },
} satisfies Schema;
