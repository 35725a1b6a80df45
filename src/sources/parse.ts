/*
 * Raw Kubernetes objects (already decoded from YAML or JSON, so `unknown`) → the validated types
 * of src/model/k8s.ts. This is the edge: nothing past it sees unvalidated data.
 *
 * Validation is strict, and every failure is a ConfigError naming the object, the field and the
 * fix, because a manifest author reads these messages, not a developer. One deliberate
 * exception, kube-proxy's behaviour: one malformed endpoint inside an EndpointSlice is dropped
 * with a warning instead of failing the slice, so one bad address never takes a Service down
 * (and, alike, one special external or load-balancer address is dropped from its Service).
 *
 * Addresses of both families are read; every address and CIDR leaves here in canonical text
 * (src/model/ip.ts: IPv6 per RFC 5952), so two spellings of one address are one frontend.
 *
 * Defaults follow the API server's and kube-proxy's: protocol TCP, type ClusterIP, traffic
 * policies Cluster, ClientIP affinity timeout 10800 s, clusterIP `None` = headless.
 */
import { ConfigError } from '../errors.js';
import { clip, oneLine, quote } from './excerpt.js';
import { specialIpv4 } from '../model/ipv4.js';
import { canonicalIp, cidrFamily, familyOf, normalizeCidr, specialIpv6, type IpFamily } from '../model/ip.js';
import type {
  EndpointSliceObject,
  EndpointSlicePort,
  IpFamilyPolicy,
  ServiceObject,
  ServicePortSpec,
  SliceEndpoint,
} from '../model/k8s.js';
import type { Protocol, TrafficPolicy } from '../model/types.js';

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** ClientIP affinity timeout when the Service sets none (the API server's default: 3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];
const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
const TRAFFIC_POLICIES: readonly TrafficPolicy[] = ['Cluster', 'Local'];
const ADDRESS_TYPES = ['IPv4', 'IPv6', 'FQDN'] as const;
/** The API server's upper bound for sessionAffinityConfig.clientIP.timeoutSeconds (one day). */
const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

/* Name rules of the API server (k8s.io/apimachinery/pkg/util/validation). */
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** IANA_SVC_NAME: a named container port (targetPort: http). */
const IANA_SVC_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

type Dict = Record<string, unknown>;

function isDict(value: unknown): value is Dict {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value as a message shows it: strings quoted (a short excerpt of a long one), containers by shape. */
function show(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return quote(value);
  return clip(String(value));
}

function oneOf(values: readonly string[]): string {
  if (values.length <= 1) return values.join('');
  return `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
}

/**
 * Reads fields of one object, throwing a ConfigError that starts with the object's identity
 * (`Service default/web: `) and names the field path.
 */
class FieldReader {
  constructor(private subject: string) {}

  /** Once the name is known, messages name the object. */
  identify(subject: string): void {
    this.subject = subject;
  }

  fail(path: string, problem: string): never {
    throw new ConfigError(oneLine(`${this.subject}: ${path} ${problem}`));
  }

  /** A mapping, or undefined when absent/null. */
  dict(value: unknown, path: string): Dict | undefined {
    if (value === undefined || value === null) return undefined;
    if (!isDict(value)) this.fail(path, `must be a mapping, got ${show(value)}`);
    return value;
  }

  /** A list; absent/null reads as empty, as in the API. */
  list(value: unknown, path: string): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(path, `must be a list, got ${show(value)}`);
    return value;
  }

  string(value: unknown, path: string): string | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') this.fail(path, `must be a string, got ${show(value)}`);
    return value;
  }

  boolean(value: unknown, path: string): boolean | null {
    if (value === undefined || value === null) return null;
    if (typeof value !== 'boolean') this.fail(path, `must be true or false, got ${show(value)}`);
    return value;
  }

  integer(value: unknown, path: string, min: number, max: number): number | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      this.fail(path, `must be an integer, got ${show(value)}`);
    }
    if (value < min || value > max) this.fail(path, `${value} is out of range ${min}-${max}`);
    return value;
  }

  /** A port number 1-65535; 0 or absent when `optional` reads as 0. */
  port(value: unknown, path: string, optional: boolean): number {
    if (optional && (value === undefined || value === null || value === 0)) return 0;
    if (value === undefined || value === null) this.fail(path, 'is missing; give a port number 1-65535');
    return this.integer(value, path, 1, 65535) ?? 0;
  }

  enumValue<T extends string>(value: unknown, path: string, allowed: readonly T[], fallback: T, what: string): T {
    const s = this.string(value, path);
    if (s === undefined || s === '') return fallback;
    if (!(allowed as readonly string[]).includes(s)) {
      this.fail(path, `${show(s)} is not ${what}; use ${oneOf(allowed)}`);
    }
    return s as T;
  }

  protocol(value: unknown, path: string): Protocol {
    const s = this.string(value, path);
    if (s === undefined || s === '') return 'TCP';
    if (!(PROTOCOLS as readonly string[]).includes(s)) {
      this.fail(path, `${show(s)} is not supported; use ${oneOf(PROTOCOLS)}`);
    }
    return s as Protocol;
  }

  stringMap(value: unknown, path: string): Record<string, string> {
    const d = this.dict(value, path);
    const out: Record<string, string> = {};
    if (!d) return out;
    for (const [k, v] of Object.entries(d)) {
      if (typeof v !== 'string') {
        this.fail(`${path}[${quote(k)}]`, `must be a string, got ${show(v)}; quote it in YAML`);
      }
      out[k] = v;
    }
    return out;
  }
}

interface ObjectMeta {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  creationTimestamp: number | null;
}

/** RFC 3339, as the API server writes metadata.creationTimestamp (`2026-11-30T01:02:03Z`). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

type NameRule = 'dns1035-label' | 'dns1123-subdomain';

function readMeta(r: FieldReader, raw: Dict, kind: string, rule: NameRule): ObjectMeta {
  const meta = r.dict(raw.metadata, 'metadata');
  if (!meta) r.fail('metadata', `is missing; every ${kind} needs metadata.name`);
  const name = r.string(meta.name, 'metadata.name');
  if (name === undefined || name === '') r.fail('metadata.name', `is missing; give the ${kind} a name`);
  const namespace = r.string(meta.namespace, 'metadata.namespace') || 'default';
  // Checked just below; until then the identity quotes only the start of a huge name.
  r.identify(`${kind} ${clip(namespace)}/${clip(name)}`);
  if (namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
    r.fail('metadata.namespace', `${show(namespace)} is not a valid namespace; use lowercase letters, digits and '-' (at most 63 characters)`);
  }
  if (rule === 'dns1035-label' && (name.length > 63 || !DNS1035_LABEL.test(name))) {
    r.fail('metadata.name', `${show(name)} is not a valid ${kind} name; use lowercase letters, digits and '-', starting with a letter (at most 63 characters)`);
  }
  if (rule === 'dns1123-subdomain' && (name.length > 253 || !DNS1123_SUBDOMAIN.test(name))) {
    r.fail('metadata.name', `${show(name)} is not a valid ${kind} name; use lowercase letters, digits, '-' and '.' (at most 253 characters)`);
  }
  // The client library decodes the API's timestamps into Date objects; manifests hold text.
  const rawCreated = meta.creationTimestamp;
  const created = rawCreated instanceof Date ? rawCreated.toISOString() : r.string(rawCreated, 'metadata.creationTimestamp');
  let creationTimestamp: number | null = null;
  if (created !== undefined && created !== '') {
    creationTimestamp = RFC3339.test(created) ? Date.parse(created) : NaN;
    if (Number.isNaN(creationTimestamp)) {
      r.fail('metadata.creationTimestamp', `${show(created)} is not an RFC 3339 time; write it as 2026-11-30T01:02:03Z or leave it out`);
    }
  }
  return {
    namespace,
    name,
    labels: r.stringMap(meta.labels, 'metadata.labels'),
    annotations: r.stringMap(meta.annotations, 'metadata.annotations'),
    creationTimestamp,
  };
}

/** Rejects a kind/apiVersion that is present but not the one this parser reads. */
function checkType(r: FieldReader, raw: Dict, apiVersion: string, kind: string): void {
  if (raw.kind !== undefined && raw.kind !== kind) {
    r.fail('kind', `is ${show(raw.kind)}, expected ${kind}`);
  }
  if (raw.apiVersion !== undefined && raw.apiVersion !== apiVersion) {
    r.fail('apiVersion', `is ${show(raw.apiVersion)}, expected ${apiVersion}`);
  }
}

function root(r: FieldReader, raw: unknown): Dict {
  if (!isDict(raw)) r.fail('', `must be a mapping (a Kubernetes object), got ${show(raw)}`);
  return raw;
}

/* ---------- Service ---------- */

const IP_FAMILY_POLICIES: readonly IpFamilyPolicy[] = ['SingleStack', 'PreferDualStack', 'RequireDualStack'];

/**
 * The canonical text of an address of either family, throwing naming `path` when it is neither.
 * IPv6 zones (`fe80::1%eth0`) are not addresses the API server accepts, and neither are they here.
 */
function readIp(r: FieldReader, value: string, path: string, hint: string): { ip: string; family: IpFamily } {
  // node:net accepts a zone ("fe80::1%eth0"); the API server does not, and neither do we.
  const family = value.includes('%') ? null : familyOf(value);
  if (family === null) return r.fail(path, `${show(value)} is not an IPv4 or IPv6 address; ${hint}`);
  return { ip: canonicalIp(value), family };
}

/** Why `ip` (canonical, of `family`) may not be a Service address or an endpoint, or null. */
function specialIp(ip: string, family: IpFamily): string | null {
  return family === 'IPv4' ? specialIpv4(ip) : specialIpv6(ip);
}

function readStringList(r: FieldReader, value: unknown, path: string): string[] {
  return r.list(value, path).map((v, i) => {
    const s = r.string(v, `${path}[${i}]`);
    if (s === undefined) r.fail(`${path}[${i}]`, 'must be a string, got null');
    return s;
  });
}

interface ClusterAddresses {
  clusterIPs: string[];
  ipFamilies: IpFamily[];
  ipFamilyPolicy: IpFamilyPolicy | null;
}

/**
 * spec.clusterIP, spec.clusterIPs, spec.ipFamilies and spec.ipFamilyPolicy, held to the API
 * server's rules (ValidateService, validateIPFamilies, validateClusterIPs): clusterIP equals
 * clusterIPs[0]; at most two cluster IPs and two families, of different families; ipFamilies[i]
 * is the family of clusterIPs[i]; two of either need a dual-stack policy; "None" stands alone.
 */
function readClusterAddresses(r: FieldReader, spec: Dict): ClusterAddresses {
  const single = r.string(spec.clusterIP, 'spec.clusterIP');
  const list = readStringList(r, spec.clusterIPs, 'spec.clusterIPs');
  if (single !== undefined && single !== '' && list.length > 0 && list[0] !== single) {
    r.fail('spec.clusterIPs[0]', `${show(list[0])} differs from spec.clusterIP ${show(single)}; they must be the same (or set only one)`);
  }
  const ipFamilyPolicy = spec.ipFamilyPolicy === undefined || spec.ipFamilyPolicy === null || spec.ipFamilyPolicy === ''
    ? null
    : r.enumValue(spec.ipFamilyPolicy, 'spec.ipFamilyPolicy', IP_FAMILY_POLICIES, 'SingleStack', 'an IP family policy');
  const listedFamilies = readStringList(r, spec.ipFamilies, 'spec.ipFamilies').map((f, i) => {
    if (f !== 'IPv4' && f !== 'IPv6') r.fail(`spec.ipFamilies[${i}]`, `${show(f)} is not an IP family; use IPv4 or IPv6`);
    return f;
  });
  if (listedFamilies.length > 2) r.fail('spec.ipFamilies', `lists ${listedFamilies.length} families; give at most two (IPv4 and IPv6)`);
  if (listedFamilies.length === 2 && listedFamilies[0] === listedFamilies[1]) {
    r.fail('spec.ipFamilies[1]', `${show(listedFamilies[1])} repeats spec.ipFamilies[0]; a dual-stack Service lists IPv4 and IPv6 once each`);
  }

  const candidates: Array<[string, string]> =
    list.length > 0 ? list.map((ip, i) => [ip, `spec.clusterIPs[${i}]`]) : single !== undefined && single !== '' ? [[single, 'spec.clusterIP']] : [];
  if (candidates.length > 2) r.fail('spec.clusterIPs', `lists ${candidates.length} addresses; give at most two, one IPv4 and one IPv6`);
  const clusterIPs: string[] = [];
  const families: IpFamily[] = [];
  let headless = false;
  for (const [raw, path] of candidates) {
    if (raw === 'None') {
      if (candidates.length > 1) r.fail(path, '"None" (headless) must be the only cluster IP');
      headless = true;
      continue;
    }
    // An empty cluster IP asks the API server to allocate one: none yet, nothing to proxy.
    if (raw === '') continue;
    const { ip, family } = readIp(r, raw, path, 'use an address like 10.96.0.10 or fd00:10:96::10, "None" for a headless Service, or leave it out to have one allocated');
    const special = specialIp(ip, family);
    // The API server allocates cluster IPs from the service CIDR; one of these never is.
    if (special !== null) r.fail(path, `${show(raw)} is ${special}; a cluster IP must come from the service CIDR`);
    if (families.includes(family)) {
      r.fail(path, `${show(raw)} is a second ${family} cluster IP; a dual-stack Service has one IPv4 and one IPv6 cluster IP`);
    }
    const i = families.length;
    const listed = listedFamilies[i];
    if (listed !== undefined && listed !== family) {
      r.fail(path, `${show(raw)} is ${family} but spec.ipFamilies[${i}] is ${listed}; list the families in the order of spec.clusterIPs`);
    }
    clusterIPs.push(ip);
    families.push(family);
  }
  const familyCount = Math.max(clusterIPs.length, listedFamilies.length);
  if (ipFamilyPolicy === 'SingleStack' && familyCount > 1) {
    r.fail('spec.ipFamilyPolicy', `is SingleStack but the Service has two ${clusterIPs.length > 1 ? 'cluster IPs' : 'ipFamilies'}; use PreferDualStack or RequireDualStack`);
  }
  if (headless) return { clusterIPs: [], ipFamilies: listedFamilies, ipFamilyPolicy };
  const ipFamilies = listedFamilies.length >= families.length ? listedFamilies : families;
  return { clusterIPs, ipFamilies, ipFamilyPolicy };
}

/**
 * A frontend address outside the special ranges; a special one is dropped with a warning (the rest
 * of the Service stays valid), as one address the API server would have refused.
 */
function usableFrontend(ip: string, family: IpFamily, path: string, subject: string, warn: WarningSink): boolean {
  const special = specialIp(ip, family);
  if (special === null) return true;
  warn(`${subject}: ${path} ${show(ip)} is ${special} and cannot be a Service address; address ignored`);
  return false;
}

/** A list of addresses of both families, canonical, without the special ones (each with a line). */
function readIpList(r: FieldReader, value: unknown, path: string, hint: string, subject: string, warn: WarningSink): string[] {
  const out: string[] = [];
  readStringList(r, value, path).forEach((s, i) => {
    const { ip, family } = readIp(r, s, `${path}[${i}]`, hint);
    if (usableFrontend(ip, family, `${path}[${i}]`, subject, warn) && !out.includes(ip)) out.push(ip);
  });
  return out;
}

/** CIDRs of both families, normalised as kube-proxy parses them (host bits cleared, IPv6 canonical). */
function readSourceRanges(r: FieldReader, spec: Dict): string[] {
  const path = 'spec.loadBalancerSourceRanges';
  const out: string[] = [];
  readStringList(r, spec.loadBalancerSourceRanges, path).forEach((raw, i) => {
    const cidr = raw.trim();
    if (!cidr.includes('/') || cidrFamily(cidr) === null) {
      r.fail(`${path}[${i}]`, `${show(raw)} is not a CIDR; write it as address/prefix, e.g. 203.0.113.0/24 or 2001:db8::/64`);
    }
    const normal = normalizeCidr(cidr);
    if (!out.includes(normal)) out.push(normal);
  });
  return out;
}

function readLoadBalancerIPs(r: FieldReader, raw: Dict, subject: string, warn: WarningSink): string[] {
  const status = r.dict(raw.status, 'status');
  const lb = r.dict(status?.loadBalancer, 'status.loadBalancer');
  const out: string[] = [];
  r.list(lb?.ingress, 'status.loadBalancer.ingress').forEach((v, i) => {
    const path = `status.loadBalancer.ingress[${i}]`;
    const ingress = r.dict(v, path);
    if (!ingress) return;
    const raw = r.string(ingress.ip, `${path}.ip`);
    // Proxy-mode load balancers deliver traffic to node IPs themselves; kube-proxy does not
    // program their addresses, and neither do we.
    const ipMode = r.string(ingress.ipMode, `${path}.ipMode`);
    if (raw === undefined || raw === '' || ipMode === 'Proxy') return;
    const { ip, family } = readIp(r, raw, `${path}.ip`, 'the load balancer controller wrote an invalid status');
    if (usableFrontend(ip, family, `${path}.ip`, subject, warn) && !out.includes(ip)) out.push(ip);
  });
  return out;
}

function readServicePort(r: FieldReader, value: unknown, i: number, type: string): ServicePortSpec {
  const path = `spec.ports[${i}]`;
  const p = r.dict(value, path);
  if (!p) r.fail(path, 'must be a mapping with at least `port`');
  const name = r.string(p.name, `${path}.name`) ?? '';
  if (name !== '' && (name.length > 63 || !DNS1123_LABEL.test(name))) {
    r.fail(`${path}.name`, `${show(name)} is not a valid port name; use lowercase letters, digits and '-' (at most 63 characters)`);
  }
  const protocol = r.protocol(p.protocol, `${path}.protocol`);
  const port = r.port(p.port, `${path}.port`, false);
  let targetPort: number | string = port;
  if (typeof p.targetPort === 'string' && p.targetPort !== '') {
    const t = p.targetPort;
    if (t.length > 15 || !IANA_SVC_NAME.test(t) || !/[a-z]/.test(t) || t.includes('--')) {
      r.fail(`${path}.targetPort`, `${show(t)} is neither a port number nor a container port name; use a number 1-65535 or a name like "http" (lowercase, at most 15 characters, with a letter)`);
    }
    targetPort = t;
  } else if (p.targetPort !== undefined && p.targetPort !== null && p.targetPort !== '' && p.targetPort !== 0) {
    targetPort = r.port(p.targetPort, `${path}.targetPort`, false);
  }
  const nodePort = r.port(p.nodePort, `${path}.nodePort`, true);
  if (nodePort !== 0 && type !== 'NodePort' && type !== 'LoadBalancer') {
    r.fail(`${path}.nodePort`, `may only be set when spec.type is NodePort or LoadBalancer (it is ${type})`);
  }
  return { name, protocol, port, targetPort, nodePort };
}

/**
 * Parses a v1 Service. Throws ConfigError naming the field on any invalid value; an external or
 * load-balancer address in a special range is dropped and reported through `warn` instead. The
 * node port range is not checked here: the API server allocated what it holds, and manifests
 * are held to the node's --nodeport-range by the model (src/model/build.ts).
 */
export function parseService(raw: unknown, warn: WarningSink = ignoreWarning): ServiceObject {
  const r: FieldReader = new FieldReader('Service');
  const obj = root(r, raw);
  checkType(r, obj, 'v1', 'Service');
  const meta = readMeta(r, obj, 'Service', 'dns1035-label');
  const subject = `Service ${meta.namespace}/${meta.name}`;
  const spec = r.dict(obj.spec, 'spec') ?? {};

  const type = r.enumValue(spec.type, 'spec.type', SERVICE_TYPES, 'ClusterIP', 'a Service type');
  const addresses: ClusterAddresses = type === 'ExternalName' ? { clusterIPs: [], ipFamilies: [], ipFamilyPolicy: null } : readClusterAddresses(r, spec);

  const ports = r.list(spec.ports, 'spec.ports').map((p, i) => readServicePort(r, p, i, type));
  const seenNames = new Map<string, number>();
  const seenPorts = new Map<string, number>();
  ports.forEach((p, i) => {
    if (ports.length > 1 && p.name === '') {
      r.fail(`spec.ports[${i}].name`, 'is required when a Service has more than one port');
    }
    const sameName = seenNames.get(p.name);
    if (sameName !== undefined) {
      r.fail(`spec.ports[${i}].name`, `${show(p.name)} is already used by spec.ports[${sameName}]; port names must be unique`);
    }
    seenNames.set(p.name, i);
    const portKey = `${p.port}/${p.protocol}`;
    const samePort = seenPorts.get(portKey);
    if (samePort !== undefined) {
      r.fail(`spec.ports[${i}]`, `${portKey} is already declared by spec.ports[${samePort}]; each port/protocol may appear once`);
    }
    seenPorts.set(portKey, i);
  });

  const affinity = r.enumValue(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP'] as const, 'None', 'a session affinity');
  let affinityTimeoutSeconds = 0;
  if (affinity === 'ClientIP') {
    const config = r.dict(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig');
    const clientIP = r.dict(config?.clientIP, 'spec.sessionAffinityConfig.clientIP');
    affinityTimeoutSeconds =
      r.integer(clientIP?.timeoutSeconds, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', 1, MAX_AFFINITY_TIMEOUT_SECONDS) ??
      DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  }

  return {
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    annotations: meta.annotations,
    creationTimestamp: meta.creationTimestamp,
    type,
    clusterIPs: addresses.clusterIPs,
    ipFamilies: addresses.ipFamilies,
    ipFamilyPolicy: addresses.ipFamilyPolicy,
    ports,
    externalIPs: readIpList(r, spec.externalIPs, 'spec.externalIPs', 'list the addresses this Service should also answer on, e.g. 192.0.2.10 or 2001:db8::10', subject, warn),
    loadBalancerIPs: readLoadBalancerIPs(r, obj, subject, warn),
    loadBalancerSourceRanges: readSourceRanges(r, spec),
    affinityTimeoutSeconds,
    externalTrafficPolicy: r.enumValue(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy', TRAFFIC_POLICIES, 'Cluster', 'a traffic policy'),
    internalTrafficPolicy: r.enumValue(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy', TRAFFIC_POLICIES, 'Cluster', 'a traffic policy'),
    healthCheckNodePort: r.port(spec.healthCheckNodePort, 'spec.healthCheckNodePort', true),
  };
}

/* ---------- EndpointSlice ---------- */

/** Where a dropped endpoint, skipped port or ignored object is reported. */
export type WarningSink = (message: string) => void;

const ignoreWarning: WarningSink = () => undefined;

function readSlicePorts(r: FieldReader, value: unknown, warn: WarningSink, subject: string): EndpointSlicePort[] {
  const out: EndpointSlicePort[] = [];
  r.list(value, 'ports').forEach((v, i) => {
    const path = `ports[${i}]`;
    const p = r.dict(v, path);
    if (!p) r.fail(path, 'must be a mapping with `port`');
    // An unnamed port may be written without `name`; the API server stores it as "".
    const name = r.string(p.name, `${path}.name`) ?? '';
    const protocol = r.protocol(p.protocol, `${path}.protocol`);
    if (p.port === undefined || p.port === null || p.port === 0) {
      // kube-proxy ignores a port without a number ("all ports" is not implemented).
      warn(`${subject}: ${path}.port is missing; port ignored`);
      return;
    }
    out.push({ name, protocol, port: r.port(p.port, `${path}.port`, false) });
  });
  return out;
}

/** Reads one endpoint; throws (caught by the caller, which drops the endpoint) when malformed. */
function readSliceEndpoint(r: FieldReader, value: unknown, path: string, addressType: EndpointSliceObject['addressType']): SliceEndpoint {
  const e = r.dict(value, path);
  if (!e) r.fail(path, 'must be a mapping with `addresses`');
  const addresses = r.list(e.addresses, `${path}.addresses`).map((a, j) => {
    const s = r.string(a, `${path}.addresses[${j}]`);
    if (s === undefined) r.fail(`${path}.addresses[${j}]`, 'must be a string, got null');
    return s;
  });
  if (addresses.length === 0) r.fail(`${path}.addresses`, 'is empty; an endpoint needs one address');
  const canonical = addresses.map((a, j) => {
    if (addressType === 'FQDN') {
      if (a === '') r.fail(`${path}.addresses[${j}]`, 'is empty; an FQDN endpoint needs a name');
      return a;
    }
    if (a.includes('%') || familyOf(a) !== addressType) r.fail(`${path}.addresses[${j}]`, `${show(a)} is not an ${addressType} address`);
    const ip = canonicalIp(a);
    const special = specialIp(ip, addressType);
    if (special !== null) r.fail(`${path}.addresses[${j}]`, `${show(a)} is ${special} and cannot be an endpoint`);
    return ip;
  });
  const conditions = r.dict(e.conditions, `${path}.conditions`);
  const hints = r.dict(e.hints, `${path}.hints`);
  let zoneHints: string[] | null = null;
  const forZones = r.list(hints?.forZones, `${path}.hints.forZones`);
  if (forZones.length > 0) {
    zoneHints = forZones.map((z, j) => {
      const zone = r.dict(z, `${path}.hints.forZones[${j}]`);
      const name = r.string(zone?.name, `${path}.hints.forZones[${j}].name`);
      if (name === undefined || name === '') r.fail(`${path}.hints.forZones[${j}].name`, 'is missing');
      return name;
    });
  }
  return {
    addresses: canonical,
    conditions: {
      ready: r.boolean(conditions?.ready, `${path}.conditions.ready`),
      serving: r.boolean(conditions?.serving, `${path}.conditions.serving`),
      terminating: r.boolean(conditions?.terminating, `${path}.conditions.terminating`),
    },
    nodeName: r.string(e.nodeName, `${path}.nodeName`) || null,
    zone: r.string(e.zone, `${path}.zone`) || null,
    zoneHints,
  };
}

/**
 * Parses a discovery.k8s.io/v1 EndpointSlice. Slice-level problems throw ConfigError; a malformed
 * endpoint is dropped and reported through `warn`.
 */
export function parseEndpointSlice(raw: unknown, warn: WarningSink = ignoreWarning): EndpointSliceObject {
  const r: FieldReader = new FieldReader('EndpointSlice');
  const obj = root(r, raw);
  checkType(r, obj, 'discovery.k8s.io/v1', 'EndpointSlice');
  const meta = readMeta(r, obj, 'EndpointSlice', 'dns1123-subdomain');
  const subject = `EndpointSlice ${meta.namespace}/${meta.name}`;
  if (obj.addressType === undefined || obj.addressType === null || obj.addressType === '') {
    r.fail('addressType', `is missing; use ${oneOf(ADDRESS_TYPES)}`);
  }
  const addressType = r.enumValue(obj.addressType, 'addressType', ADDRESS_TYPES, 'IPv4', 'an address type');
  const ports = readSlicePorts(r, obj.ports, warn, subject);

  const endpoints: SliceEndpoint[] = [];
  r.list(obj.endpoints, 'endpoints').forEach((v, i) => {
    try {
      endpoints.push(readSliceEndpoint(new FieldReader(subject), v, `endpoints[${i}]`, addressType));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      warn(oneLine(`${err.message}; endpoint dropped`));
    }
  });

  return {
    namespace: meta.namespace,
    name: meta.name,
    serviceName: meta.labels[SERVICE_NAME_LABEL] || null,
    addressType,
    ports,
    endpoints,
  };
}

/* ---------- legacy v1 Endpoints ---------- */

/**
 * Name of the slice made from subset `index` of a legacy Endpoints object; its IPv6 addresses go
 * to a slice of their own (addressType IPv6), as the EndpointSlice mirroring controller splits them.
 */
export function legacySliceName(endpointsName: string, index: number, family: IpFamily = 'IPv4'): string {
  return family === 'IPv4' ? `${endpointsName}-endpoints-${index}` : `${endpointsName}-endpoints-${index}-ipv6`;
}

interface LegacyAddress {
  family: IpFamily;
  endpoint: SliceEndpoint;
}

function readLegacyAddresses(
  r: FieldReader,
  value: unknown,
  path: string,
  ready: boolean,
  warn: WarningSink,
  subject: string,
): LegacyAddress[] {
  const out: LegacyAddress[] = [];
  r.list(value, path).forEach((v, j) => {
    const apath = `${path}[${j}]`;
    try {
      const reader: FieldReader = new FieldReader(subject);
      const a = reader.dict(v, apath);
      if (!a) reader.fail(apath, 'must be a mapping with `ip`');
      const raw = reader.string(a.ip, `${apath}.ip`);
      if (raw === undefined || raw === '') reader.fail(`${apath}.ip`, 'is missing');
      const { ip, family } = readIp(reader, raw, `${apath}.ip`, 'give the pod\'s address');
      const special = specialIp(ip, family);
      if (special !== null) reader.fail(`${apath}.ip`, `${show(raw)} is ${special} and cannot be an endpoint`);
      out.push({
        family,
        endpoint: {
          addresses: [ip],
          // What the EndpointSlice mirroring controller writes: notReadyAddresses are neither
          // ready nor serving, and v1 Endpoints cannot say "terminating".
          conditions: { ready, serving: ready, terminating: false },
          nodeName: reader.string(a.nodeName, `${apath}.nodeName`) || null,
          zone: null,
          zoneHints: null,
        },
      });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      warn(oneLine(`${err.message}; address dropped`));
    }
  });
  return out;
}

/**
 * Converts a legacy v1 Endpoints object into one EndpointSlice per subset (each subset has its
 * own ports), labelled with the Endpoints' name as the service name; a subset's IPv6 addresses
 * make a second, IPv6 slice.
 */
export function parseEndpoints(raw: unknown, warn: WarningSink = ignoreWarning): EndpointSliceObject[] {
  const r: FieldReader = new FieldReader('Endpoints');
  const obj = root(r, raw);
  checkType(r, obj, 'v1', 'Endpoints');
  const meta = readMeta(r, obj, 'Endpoints', 'dns1123-subdomain');
  const subject = `Endpoints ${meta.namespace}/${meta.name}`;
  return r.list(obj.subsets, 'subsets').flatMap((v, i) => {
    const path = `subsets[${i}]`;
    const subset = r.dict(v, path) ?? {};
    const ports: EndpointSlicePort[] = r.list(subset.ports, `${path}.ports`).map((pv, k) => {
      const ppath = `${path}.ports[${k}]`;
      const p = r.dict(pv, ppath);
      if (!p) r.fail(ppath, 'must be a mapping with `port`');
      return {
        name: r.string(p.name, `${ppath}.name`) ?? '',
        protocol: r.protocol(p.protocol, `${ppath}.protocol`),
        port: r.port(p.port, `${ppath}.port`, false),
      };
    });
    const addresses = [
      ...readLegacyAddresses(r, subset.addresses, `${path}.addresses`, true, warn, subject),
      ...readLegacyAddresses(r, subset.notReadyAddresses, `${path}.notReadyAddresses`, false, warn, subject),
    ];
    const slice = (family: IpFamily): EndpointSliceObject => ({
      namespace: meta.namespace,
      name: legacySliceName(meta.name, i, family),
      serviceName: meta.name,
      addressType: family,
      ports: family === 'IPv4' ? ports : ports.map((p) => ({ ...p })),
      endpoints: addresses.filter((a) => a.family === family).map((a) => a.endpoint),
    });
    // The IPv4 slice is always there (a subset without addresses still says which ports exist).
    return addresses.some((a) => a.family === 'IPv6') ? [slice('IPv4'), slice('IPv6')] : [slice('IPv4')];
  });
}

/* ---------- dispatcher ---------- */

/** `Kind namespace/name` of the object a document defines, e.g. `Endpoints default/web`. */
export type ObjectRef = string;

export type ParsedItem =
  | { kind: 'Service'; object: ServiceObject }
  | { kind: 'EndpointSlice'; object: EndpointSliceObject };

export interface ParsedSource {
  /** The object as written (a legacy Endpoints yields EndpointSlices). */
  ref: ObjectRef;
  /** Where inside the document: '' at the top, `items[2]` inside a List. */
  path: string;
  items: ParsedItem[];
}

export interface ParseFailure {
  /** The object the failure belongs to, when its kind and name could still be read. */
  ref: ObjectRef | null;
  path: string;
  error: ConfigError;
}

export interface ParseOutcome {
  sources: ParsedSource[];
  failures: ParseFailure[];
  /** Dropped endpoints and ports, with the object and field. */
  warnings: string[];
  /** Objects of kinds vipr does not read, e.g. `apps/v1 Deployment default/web`. */
  ignored: string[];
}

const SUPPORTED: Record<string, string> = {
  Service: 'v1',
  Endpoints: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
};

/**
 * How deep Lists may nest inside one document. Real manifests nest one or two; the bound keeps a
 * hostile document (a List inside a List, 20,000 times) from exhausting the stack.
 */
export const MAX_LIST_NESTING = 10;

/** Best-effort identity of a raw object, for failures and for ignored objects. */
function refOf(kind: string, raw: Dict): ObjectRef | null {
  const meta = isDict(raw.metadata) ? raw.metadata : undefined;
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') return null;
  const ns = typeof meta?.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  return `${kind} ${ns}/${name}`;
}

/** The identity of an object as a message shows it: `Deployment default/web`, names clipped. */
function showRef(kind: string, raw: Dict): string {
  const meta = isDict(raw.metadata) ? raw.metadata : undefined;
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') return clip(kind);
  const ns = typeof meta?.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  return `${clip(kind)} ${clip(ns)}/${clip(name)}`;
}

/** A message about the object at `path`, on one capped line. */
function at(path: string, message: string): string {
  return oneLine(path === '' ? message : `${path}: ${message}`);
}

function typeField(raw: Dict, field: 'apiVersion' | 'kind'): string | undefined | { invalid: unknown } {
  const value = raw[field];
  if (value === undefined || value === null || typeof value === 'string') return value ?? undefined;
  return { invalid: value };
}

function parseInto(
  raw: unknown,
  path: string,
  inherited: { apiVersion: string; kind: string } | null,
  listDepth: number,
  out: ParseOutcome,
): void {
  if (!isDict(raw)) {
    out.failures.push({
      ref: null,
      path,
      error: new ConfigError(at(path, `not a Kubernetes object: expected a mapping with apiVersion and kind, got ${show(raw)}`)),
    });
    return;
  }
  const rawKind = typeField(raw, 'kind');
  if (typeof rawKind === 'object') {
    out.failures.push({
      ref: null,
      path,
      error: new ConfigError(at(path, `kind must be a string, got ${show(rawKind.invalid)}; write the kind by name, e.g. "kind: Service"`)),
    });
    return;
  }
  const rawApiVersion = typeField(raw, 'apiVersion');
  if (typeof rawApiVersion === 'object') {
    const kindNow = rawKind ?? inherited?.kind;
    out.failures.push({
      ref: kindNow ? refOf(kindNow, raw) : null,
      path,
      error: new ConfigError(at(path, `apiVersion must be a string, got ${show(rawApiVersion.invalid)}; write it as text, e.g. "apiVersion: v1"`)),
    });
    return;
  }
  const apiVersion = rawApiVersion ?? inherited?.apiVersion;
  const kind = rawKind ?? inherited?.kind;
  if (!apiVersion || !kind) {
    const missing = !apiVersion && !kind ? 'apiVersion and kind are' : !apiVersion ? 'apiVersion is' : 'kind is';
    out.failures.push({
      ref: kind ? refOf(kind, raw) : null,
      path,
      error: new ConfigError(at(path, `${missing} missing; a Service starts with "apiVersion: v1" and "kind: Service"`)),
    });
    return;
  }

  if (kind === 'List' || (kind.endsWith('List') && Array.isArray(raw.items))) {
    // Items of a typed list (ServiceList) may omit apiVersion/kind, as API responses do.
    const itemType = kind === 'List' ? null : { apiVersion, kind: kind.slice(0, -'List'.length) };
    if (raw.items !== undefined && raw.items !== null && !Array.isArray(raw.items)) {
      out.failures.push({ ref: null, path, error: new ConfigError(at(path, `${clip(kind)}: items must be a list`)) });
      return;
    }
    if (listDepth >= MAX_LIST_NESTING) {
      out.failures.push({
        ref: null,
        path,
        error: new ConfigError(at(path, `Lists nested more than ${MAX_LIST_NESTING} deep; flatten them into one List`)),
      });
      return;
    }
    const items: unknown[] = Array.isArray(raw.items) ? raw.items : [];
    items.forEach((item, i) => {
      const itemPath = path === '' ? `items[${i}]` : `${path}.items[${i}]`;
      parseInto(item, itemPath, itemType, listDepth + 1, out);
    });
    return;
  }

  if (!Object.hasOwn(SUPPORTED, kind) || SUPPORTED[kind] !== apiVersion) {
    out.ignored.push(at(path, `${clip(apiVersion)} ${showRef(kind, raw)}`));
    return;
  }
  const typed = { ...raw, apiVersion, kind };
  const warn: WarningSink = (message) => out.warnings.push(at(path, message));
  try {
    let items: ParsedItem[];
    if (kind === 'Service') {
      items = [{ kind: 'Service', object: parseService(typed, warn) }];
    } else if (kind === 'EndpointSlice') {
      items = [{ kind: 'EndpointSlice', object: parseEndpointSlice(typed, warn) }];
    } else {
      items = parseEndpoints(typed, warn).map((object) => ({ kind: 'EndpointSlice' as const, object }));
    }
    // The parsers above required metadata.name, so the object has an identity.
    out.sources.push({ ref: refOf(kind, typed) ?? kind, path, items });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    out.failures.push({ ref: refOf(kind, raw), path, error: new ConfigError(at(path, err.message), { cause: err }) });
  }
}

/**
 * Parses one decoded document: a v1 Service, a discovery.k8s.io/v1 EndpointSlice, a v1
 * Endpoints, or a List / `*List` of those (recursively). Other kinds are listed in `ignored`.
 * Unlike the per-kind parsers it does not throw on invalid objects: each one becomes a failure,
 * so one bad item of a List does not hide the good ones. A null document yields nothing.
 */
export function parseObject(raw: unknown): ParseOutcome {
  const out: ParseOutcome = { sources: [], failures: [], warnings: [], ignored: [] };
  if (raw === null || raw === undefined) return out;
  parseInto(raw, '', null, 0, out);
  return out;
}
