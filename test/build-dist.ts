/**
 * Vitest global setup of the projects that start the on-prem server or load the SDK's package entry: they
 * run the built JavaScript (dist/), so it is built from the current source first. Several projects list this
 * file; the build runs once per test run (a promise on globalThis, which every project's setup shares).
 */
import { buildDist } from '../scripts/build.js';

const KEY = Symbol.for('iris.test.buildDist');
type WithBuild = typeof globalThis & { [KEY]?: Promise<void> };

export default async function setup(): Promise<void> {
  const g = globalThis as WithBuild;
  g[KEY] ??= Promise.resolve().then(buildDist);
  await g[KEY];
}
