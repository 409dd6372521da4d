import { runConformance } from '../conformance/suite.js';
import { clusterTarget } from './conformance-target.js';

/**
 * The conformance suite against ONE node of a cluster whose nodes run two workers each (issue 13): 3 nats-server
 * + 2 Iris nodes of 2 workers, so four cluster members (`<node>.<i>`). The suite talks to node0 only: its users
 * live on node0's two workers and node1's two, so every feature (messages, presence, typing, groups, keys, the
 * admin API...) runs between sibling workers of one node as well as between nodes, over NATS; sockets are handed
 * to a sibling or relayed to node1. restart() restarts node0 (both its workers hand over, then rejoin).
 */
const WORKERS = 2;
runConformance(`onprem cluster (node0 of 2 nodes x ${WORKERS} workers, 3 NATS servers)`, () => clusterTarget(['node0', 'node1'], WORKERS));
