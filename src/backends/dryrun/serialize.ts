/**
 * The IR as plain JSON: ProxyTables with each table's services Map turned into an array in key
 * order. Used by the dry-run backend's output lines and by /debug/plan. Pure.
 */
import type { EndpointSet, PlannedEndpoint, ProxyTable, ProxyTables, ServiceEntry } from '../../plan/types.js';

export interface SerializedTable extends Omit<ProxyTable, 'services'> {
  readonly services: readonly ServiceEntry[];
}

export interface SerializedTables {
  readonly '4': SerializedTable;
  readonly '6': SerializedTable;
}

/**
 * A PlannedEndpoint is a view of the model's Endpoint object (the IR shares it), so only the
 * IR's fields are written out.
 */
function serializeEndpoints(list: readonly PlannedEndpoint[]): PlannedEndpoint[] {
  return list.map((e) => ({ ip: e.ip, port: e.port, isLocal: e.isLocal, ready: e.ready }));
}

function serializeSet(s: EndpointSet): EndpointSet {
  return { verdict: s.verdict, endpoints: serializeEndpoints(s.endpoints) };
}

function serializeEntry(e: ServiceEntry): ServiceEntry {
  const out = { ...e, internal: serializeSet(e.internal), external: serializeSet(e.external), cluster: serializeSet(e.cluster) };
  return e.serving !== undefined ? { ...out, serving: serializeEndpoints(e.serving) } : out;
}

function serializeTable(t: ProxyTable): SerializedTable {
  const services: ServiceEntry[] = [];
  for (const e of t.services.values()) services.push(serializeEntry(e));
  return {
    family: t.family,
    nodeName: t.nodeName,
    nodeIPs: t.nodeIPs,
    nodePortAddresses: t.nodePortAddresses,
    localTraffic: t.localTraffic,
    masqueradeAll: t.masqueradeAll,
    // Only when known, so tables without service CIDRs print as before.
    ...(t.serviceCIDRs ? { serviceCIDRs: t.serviceCIDRs } : {}),
    services,
  };
}

export function serializeTables(tables: ProxyTables): SerializedTables {
  return { '4': serializeTable(tables[4]), '6': serializeTable(tables[6]) };
}
