/*
 * Chain and set names exactly as kube-proxy derives them, so that rules rendered here can be
 * compared line for line with kube-proxy's and so that switching between kube-proxy and vipr
 * on a node reuses (or cleanly replaces) the same objects.
 *
 * iptables (pkg/proxy/iptables/proxier.go portProtoHash / servicePortEndpointChainName):
 *   prefix + base32(sha256(servicePortName + protocol [+ endpoint]))[:16]
 * nftables (pkg/proxy/nftables/proxier.go servicePortChainNameBase / hashAndTruncate):
 *   prefix + base32(sha256(name))[:8] + "-" + name, name = "ns/svc/proto/port[__ip/port]"
 * where servicePortName is ServicePortName.String() ("ns/name:port", or "ns/name" when the
 * port is unnamed) and protocol is lowercase.
 */
import { createHash } from 'node:crypto';
import type { Protocol, ServicePortName } from '../model/types.js';

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 with padding, as Go's base32.StdEncoding. */
export function base32Std(data: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of data) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (5 - bits)) & 31];
  while (out.length % 8 !== 0) out += '=';
  return out;
}

function sha256Base32(text: string): string {
  return base32Std(createHash('sha256').update(text, 'utf8').digest());
}

export function lowerProtocol(protocol: Protocol): string {
  return protocol.toLowerCase();
}

/** kube-proxy's portProtoHash: the 16 characters shared by a port's SVC/SVL/EXT/FW chains. */
export function portProtoHash(servicePortName: string, protocol: string): string {
  return sha256Base32(servicePortName + protocol).slice(0, 16);
}

export function servicePortChainName(servicePortName: string, protocol: string): string {
  return `KUBE-SVC-${portProtoHash(servicePortName, protocol)}`;
}

export function servicePortLocalChainName(servicePortName: string, protocol: string): string {
  return `KUBE-SVL-${portProtoHash(servicePortName, protocol)}`;
}

export function serviceExternalChainName(servicePortName: string, protocol: string): string {
  return `KUBE-EXT-${portProtoHash(servicePortName, protocol)}`;
}

export function serviceFirewallChainName(servicePortName: string, protocol: string): string {
  return `KUBE-FW-${portProtoHash(servicePortName, protocol)}`;
}

/** KUBE-SEP-…; `endpoint` is `ip:port`. */
export function servicePortEndpointChainName(servicePortName: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${sha256Base32(servicePortName + protocol + endpoint).slice(0, 16)}`;
}

const IPTABLES_SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-EXT-'];

/** kube-proxy's isServiceChainName: chains it owns per service and may delete when stale. */
export function isIptablesServiceChainName(chain: string): boolean {
  return IPTABLES_SERVICE_CHAIN_PREFIXES.some((prefix) => chain.startsWith(prefix));
}

/** knftables.NameLengthMax (256) minus kube-proxy's chainNamePrefixLengthMax (16). */
const NFT_CHAIN_NAME_BASE_LENGTH_MAX = 256 - 16;

function hashAndTruncate(name: string): string {
  const full = `${sha256Base32(name).slice(0, 8)}-${name}`;
  return full.length > NFT_CHAIN_NAME_BASE_LENGTH_MAX
    ? `${full.slice(0, NFT_CHAIN_NAME_BASE_LENGTH_MAX - 3)}...`
    : full;
}

/** e.g. "ULMVA6XW-ns1/svc1/tcp/p80". */
export function nftServicePortChainNameBase(id: Pick<ServicePortName, 'namespace' | 'name' | 'port'>, protocol: string): string {
  return hashAndTruncate(`${id.namespace}/${id.name}/${protocol}/${id.port}`);
}

/** e.g. "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80". */
export function nftEndpointChainNameBase(
  id: Pick<ServicePortName, 'namespace' | 'name' | 'port'>,
  protocol: string,
  endpointIP: string,
  endpointPort: number,
): string {
  const ip = endpointIP.replaceAll(':', '.');
  return hashAndTruncate(`${id.namespace}/${id.name}/${protocol}/${id.port}__${ip}/${endpointPort}`);
}
