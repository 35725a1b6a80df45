/*
 * Reading the nftables mode back: `nft -j list table ip kube-proxy` of what the renderer wrote,
 * through the real nft in a throwaway network namespace, must list the desired services.
 */
import { renderNftables } from '../../src/render/nftables.js';
import type { RenderOptions } from '../../src/render/options.js';
import { sortListing } from '../../src/model/listing.js';
import { nftListing, serviceNameFromChain } from '../../src/modes/nft-listing.js';
import { countNftObjects } from '../../src/modes/nftables.js';
import { DataplaneError } from '../../src/errors.js';
import { desiredState, endpoint, entry, servicePort } from '../fixtures/render/state.js';
import { inNetns } from '../fixtures/render/tools.js';

const OPTS: RenderOptions = { clusterCIDRs: [], masqueradeAll: false, nodeIPs: ['172.30.0.1'], nodePortAddresses: [], ipvsScheduler: 'rr' };
const be = (address: string, port: number) => ({ address, port, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] });

function state() {
  return desiredState([
    entry(servicePort('default', 'web', { portName: '', clusterIP: '10.0.0.213', port: 80 }), [endpoint('10.244.0.11', 80), endpoint('10.244.0.12', 80)]),
    entry(servicePort('default', 'dns', { portName: 'dns', protocol: 'UDP', clusterIP: '10.0.0.53', port: 53 }), [endpoint('10.244.0.13', 5353)]),
    entry(
      servicePort('default', 'sticky', { portName: 'http', type: 'NodePort', clusterIP: '10.0.0.214', port: 80, nodePort: 30080, affinityTimeoutSeconds: 600 }),
      [endpoint('10.244.0.12', 8080), endpoint('10.244.0.11', 8080)],
    ),
    entry(servicePort('default', 'empty', { portName: '', type: 'NodePort', clusterIP: '10.0.0.215', port: 80, nodePort: 30081 }), []),
  ]);
}

describe('nftables read-back', () => {
  test('chain names give the service port name', () => {
    expect(serviceNameFromChain('service-UOJBH74F-default/nginx-service/tcp/')).toBe('default/nginx-service');
    expect(serviceNameFromChain('endpoint-MULVGCJG-default/sticky/tcp/http__10.244.0.11/80')).toBe('default/sticky:http');
    expect(serviceNameFromChain('external-EDE2N7RF-ns/svc/udp/p53')).toBe('ns/svc:p53');
    expect(serviceNameFromChain('mark-for-masquerade')).toBeNull();
  });

  test('render → nft -f → nft -j list → listing equals the desired state', () => {
    const text = renderNftables(state(), OPTS);
    const r = inNetns('nft -f - && nft -j list table ip kube-proxy', text);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(sortListing(nftListing(r.stdout, 'nftables')).services).toEqual([
      { protocol: 'TCP', address: '0.0.0.0', port: 30080, scheduler: 'random', persistentSeconds: 600, name: 'default/sticky:http', backends: [be('10.244.0.11', 8080), be('10.244.0.12', 8080)] },
      { protocol: 'TCP', address: '0.0.0.0', port: 30081, scheduler: 'random', persistentSeconds: 0, name: 'default/empty', backends: [] },
      { protocol: 'UDP', address: '10.0.0.53', port: 53, scheduler: 'random', persistentSeconds: 0, name: 'default/dns:dns', backends: [be('10.244.0.13', 5353)] },
      { protocol: 'TCP', address: '10.0.0.213', port: 80, scheduler: 'random', persistentSeconds: 0, name: 'default/web', backends: [be('10.244.0.11', 80), be('10.244.0.12', 80)] },
      { protocol: 'TCP', address: '10.0.0.214', port: 80, scheduler: 'random', persistentSeconds: 600, name: 'default/sticky:http', backends: [be('10.244.0.11', 8080), be('10.244.0.12', 8080)] },
      { protocol: 'TCP', address: '10.0.0.215', port: 80, scheduler: 'random', persistentSeconds: 0, name: 'default/empty', backends: [] },
    ]);
  });

  test('the transaction replaces the table: applied twice, one table with the same content', () => {
    const text = renderNftables(state(), OPTS);
    const once = inNetns('nft -f - && nft -j list table ip kube-proxy', text);
    const twice = inNetns('f=$(mktemp) && cat > "$f" && nft -f "$f" && nft -f "$f"; rc=$?; rm -f "$f"; [ $rc = 0 ] && nft list tables && nft -j list table ip kube-proxy', text);
    expect(twice.stderr).toBe('');
    expect(twice.status).toBe(0);
    const [tables, json] = [twice.stdout.slice(0, twice.stdout.indexOf('{')), twice.stdout.slice(twice.stdout.indexOf('{'))];
    expect(tables.trim()).toBe('table ip kube-proxy');
    expect(nftListing(json, 'nftables')).toEqual(nftListing(once.stdout, 'nftables'));
    expect(countNftObjects(text)).toBeGreaterThan(20);
  });

  test('output that is not JSON is a DataplaneError', () => {
    expect(() => nftListing('table ip kube-proxy {', 'nftables')).toThrow(DataplaneError);
  });

  test('an empty table lists nothing', () => {
    expect(nftListing('{"nftables": [{"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}]}', 'x').services).toEqual([]);
  });
});
