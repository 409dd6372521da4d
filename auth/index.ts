export * from './config.js';
export * from './errors.js';
export * from './refusals.js';
export * from './request.js';
export * from './verify.js';
export * from './upgrade.js';
export * from './refresh.js';
