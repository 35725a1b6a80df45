/*
 * Which endpoints traffic to a ServicePort may reach from this node: kube-proxy's rules
 * (pkg/proxy/topology.go CategorizeEndpoints, pkg/proxy/serviceport.go), so that switching from
 * kube-proxy to vipr changes no backend choice.
 *
 * - "Usable" means ready; when no endpoint is ready, serving-and-terminating endpoints are used
 *   instead, so connections keep working during a rolling update (KEP-1669). The fallback is
 *   decided separately for the Cluster set and for the Local set.
 * - Topology hints narrow the Cluster set to endpoints hinted for this node's zone, but only when
 *   every ready endpoint carries hints and at least one is hinted for this zone; otherwise hints
 *   are ignored, because half-applied hints would overload the hinted endpoints.
 * - The Cluster set is computed whenever internal traffic uses it or the service is externally
 *   reachable (externalTrafficPolicy Local still short-circuits pod traffic to all endpoints);
 *   the Local set whenever internalTrafficPolicy or externalTrafficPolicy is Local.
 */
import type { Endpoint, EndpointSelection, NodeInfo, ServicePort } from './types.js';

/** Reachable through something other than the cluster IP: NodePort, externalIPs or LB IPs. */
export function isExternallyAccessible(svc: ServicePort): boolean {
  return svc.nodePort !== 0 || svc.loadBalancerIPs.length > 0 || svc.externalIPs.length > 0;
}

export function usesClusterEndpoints(svc: ServicePort): boolean {
  return svc.internalTrafficPolicy !== 'Local' || isExternallyAccessible(svc);
}

export function usesLocalEndpoints(svc: ServicePort): boolean {
  return (
    svc.internalTrafficPolicy === 'Local' ||
    (svc.externalTrafficPolicy === 'Local' && isExternallyAccessible(svc))
  );
}

function isServingTerminating(ep: Endpoint): boolean {
  return ep.serving && ep.terminating;
}

/** Whether zone hints apply for this node: every ready endpoint hinted, one for our zone. */
export function zoneHintsApply(endpoints: readonly Endpoint[], zone: string | null): boolean {
  let anyReady = false;
  let hintedForZone = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    anyReady = true;
    if (ep.zoneHints === null || ep.zoneHints.length === 0) return false;
    if (zone !== null && ep.zoneHints.includes(zone)) hintedForZone = true;
  }
  return anyReady && hintedForZone;
}

function endpointId(ep: Endpoint): string {
  return `${ep.ip}:${ep.port}`;
}

/**
 * Categorizes the endpoints of one ServicePort for this node. `endpoints` must already have
 * isLocal set; the output lists keep their order.
 */
export function selectEndpoints(
  endpoints: readonly Endpoint[],
  svc: ServicePort,
  node: NodeInfo,
): EndpointSelection {
  const none: EndpointSelection = {
    clusterEndpoints: [],
    localEndpoints: [],
    allReachableEndpoints: [],
    hasAnyEndpoints: false,
  };
  if (endpoints.length === 0) return none;

  let clusterEndpoints: Endpoint[] = [];
  let hasAnyEndpoints = false;
  let topologyFiltered = false;
  if (usesClusterEndpoints(svc)) {
    topologyFiltered = zoneHintsApply(endpoints, node.zone);
    clusterEndpoints = endpoints.filter(
      (ep) => ep.ready && (!topologyFiltered || (ep.zoneHints ?? []).includes(node.zone ?? '')),
    );
    // Topology was already ignored if no ready endpoint matched it, so an empty set here means
    // nothing is ready anywhere: fall back to endpoints that are terminating but still serving.
    if (clusterEndpoints.length === 0) clusterEndpoints = endpoints.filter(isServingTerminating);
    hasAnyEndpoints = clusterEndpoints.length > 0;
  }

  if (!usesLocalEndpoints(svc)) {
    return { clusterEndpoints, localEndpoints: [], allReachableEndpoints: clusterEndpoints, hasAnyEndpoints };
  }

  let localReady = false;
  let localServingTerminating = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      hasAnyEndpoints = true;
      if (ep.isLocal) localReady = true;
    } else if (isServingTerminating(ep)) {
      hasAnyEndpoints = true;
      if (ep.isLocal) localServingTerminating = true;
    }
  }
  let localEndpoints: Endpoint[] = [];
  let localUsesTerminating = false;
  if (localReady) {
    localEndpoints = endpoints.filter((ep) => ep.isLocal && ep.ready);
  } else if (localServingTerminating) {
    localUsesTerminating = true;
    localEndpoints = endpoints.filter((ep) => ep.isLocal && isServingTerminating(ep));
  }

  if (!usesClusterEndpoints(svc)) {
    return { clusterEndpoints: [], localEndpoints, allReachableEndpoints: localEndpoints, hasAnyEndpoints };
  }
  if (!topologyFiltered && !localUsesTerminating) {
    // The Cluster set holds every ready endpoint, so it contains the (ready) Local set.
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasAnyEndpoints };
  }
  const reachable = new Set([...clusterEndpoints, ...localEndpoints].map(endpointId));
  return {
    clusterEndpoints,
    localEndpoints,
    allReachableEndpoints: endpoints.filter((ep) => reachable.has(endpointId(ep))),
    hasAnyEndpoints,
  };
}
