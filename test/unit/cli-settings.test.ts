import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TokenVerifier, authConfigFromEnv } from '../../auth/index.js';
import { flagName, settingSpec } from '../../core/settings.js';
import { ONPREM_PORT, WRANGLER_PORT, connectUrl } from '../../scripts/lib/endpoints.js';
import { mintToken, tokenArgs } from '../../scripts/token.js';

/**
 * The CLIs speak the server's names (issue 9): `npm run token` takes the on-prem server's own
 * --jwt-secret / --jwt-issuer / --jwt-audience (the old --secret / --iss / --aud still work), and `npm run chat`
 * reaches an on-prem server with --onprem as easily as wrangler dev.
 */

const ROOT = resolve(import.meta.dirname, '../..');

describe('npm run token', () => {
  it('takes the flags the server takes for the same settings', () => {
    const flags = ['IRIS_JWT_SECRET', 'IRIS_JWT_ISSUER', 'IRIS_JWT_AUDIENCE'].map(flagName);
    expect(flags).toEqual(['--jwt-secret', '--jwt-issuer', '--jwt-audience']);
    const { opts } = tokenArgs(['alice', flags[0]!, 's3', flags[1]!, 'https://iss', `${flags[2]!}=app`]);
    expect(opts).toEqual({ secret: 's3', issuer: 'https://iss', audience: 'app' });
  });

  it('still takes the old names, but not both names of one option', () => {
    expect(tokenArgs(['alice', '--secret', 's', '--iss', 'i', '--aud', 'a']).opts).toEqual({ secret: 's', issuer: 'i', audience: 'a' });
    expect(() => tokenArgs(['alice', '--secret', 's', '--jwt-secret', 't'])).toThrow('--jwt-secret and --secret are the same option');
    expect(() => tokenArgs(['alice', '--issuer', 'x'])).toThrow();
  });

  it('mints what a server configured with the same values accepts', async () => {
    const server = { IRIS_JWT_SECRET: 'cli-secret', IRIS_JWT_ISSUER: 'https://auth.cli', IRIS_JWT_AUDIENCE: 'iris-cli' };
    const argv = ['bob', ...Object.entries(server).flatMap(([k, v]) => [flagName(k), v])];
    const { user, opts } = tokenArgs(argv);
    const tok = await mintToken(user!, opts);
    expect((await new TokenVerifier(authConfigFromEnv(server)).verify(tok)).user).toBe('bob');
    await expect(new TokenVerifier(authConfigFromEnv({ ...server, IRIS_JWT_AUDIENCE: 'other' })).verify(tok)).rejects.toThrow();
  });
});

describe('npm run chat: where it connects', () => {
  it('defaults to npm start, --onprem to the on-prem default port, --port to any', () => {
    expect(ONPREM_PORT).toBe(Number(settingSpec('IRIS_PORT')!.default));
    expect(connectUrl({})).toBe(`ws://127.0.0.1:${WRANGLER_PORT}/v1/connect`);
    expect(connectUrl({ onprem: true })).toBe(`ws://127.0.0.1:${ONPREM_PORT}/v1/connect`);
    expect(connectUrl({ port: '9100' })).toBe('ws://127.0.0.1:9100/v1/connect');
    expect(connectUrl({ url: 'wss://chat.example/v1/connect' })).toBe('wss://chat.example/v1/connect');
    expect(() => connectUrl({ url: 'ws://x/v1/connect', onprem: true })).toThrow();
    expect(() => connectUrl({ port: '9100', onprem: true })).toThrow();
    expect(() => connectUrl({ port: 'http' })).toThrow('--port must be an integer');
  });

  it('the ports are the ones the start scripts use', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['start']).toContain(`--port ${WRANGLER_PORT}`);
    // npm run onprem passes no --port: the server's declared default is the port.
    expect(pkg.scripts['onprem']).not.toContain('--port');
  });
});
