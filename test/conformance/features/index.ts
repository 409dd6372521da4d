import type { IrisClient } from '../../../client/index.js';
import type { ClientPool, Seen, Sender } from '../helpers.js';
import type { Target } from '../suite.js';
import { groups } from './groups.js';
import { groupsPlugins } from './groups-plugins.js';
import { refsFeature } from './refs.js';
import { sync } from './sync.js';
import { typingFeature } from './typing.js';
import { keysFeature } from './keys.js';
import { trustFeature } from './trust.js';

/**
 * What a feature's conformance tests get from runConformance: the running target and the suite's helpers. A
 * feature (groups, typing, ...) keeps its black-box tests in its own file in this folder, exports one function
 * that declares them (plain `it`/`describe` calls), and is listed in FEATURES; the suite runs every feature
 * against every profile.
 */
export interface ConformanceContext {
  target(): Target;
  /** A user id no other test (or earlier run against the same server) uses. */
  user(label: string): string;
  pool: ClientPool;
  /** A fresh user with one connected SDK client (device d1 unless `extra.device`), closed after each test. */
  online(label: string, extra?: Parameters<ClientPool['make']>[1]): Promise<{ u: string; c: IrisClient; s: Sender; seen: Seen }>;
  /** A temporary directory removed after the run. */
  tempDir(): string;
}

export type Feature = (ctx: ConformanceContext) => void;

/** Every feature's conformance tests, in the order they run. */
export const FEATURES: Feature[] = [refsFeature, typingFeature, sync, groups, groupsPlugins, keysFeature, trustFeature];
