/// <reference types="@cloudflare/vitest-plugin/types" />
import type { Env as IrisEnv } from '../../durable-objects/env.js';

declare global {
  namespace Cloudflare {
    interface Env extends IrisEnv {}
  }
}
