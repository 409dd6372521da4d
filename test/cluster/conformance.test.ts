import { runConformance } from '../conformance/suite.js';
import { clusterTarget } from './conformance-target.js';

/**
 * The conformance suite against ONE node of a cluster (issue 13): 3 nats-server + 3 Iris nodes (one worker
 * each); the suite talks to node0 only, so most of its users live in partitions of the other nodes (sockets
 * relayed, calls over NATS). restart() restarts node0 (a graceful hand-over and a rejoin).
 */
runConformance('onprem cluster (node0 of 3 nodes, 3 NATS servers)', () => clusterTarget(['node0', 'node1', 'node2'], 1));
