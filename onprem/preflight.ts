import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { defaultWorkers, StartupError, type OnpremConfig } from './config.js';

/**
 * What the supervisor checks and claims before any worker exists, each failure a StartupError with a message an
 * operator can act on: the data directory (usable, writable, with a private run directory), its lock (one
 * server per data directory), the worker count it was created with, and the port.
 */

const META_FILE = 'iris-onprem.json';
/** The supervisor's pid, for people: never used to decide anything. */
const LOCK_FILE = 'iris-onprem.lock';
/** The lock itself: a SQLite file the supervisor holds an exclusive (kernel-released) lock on. */
const LOCK_DB = 'iris-onprem.lock.sqlite';
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;


/** Creates the data directory if needed and proves it is writable, with a message an operator can act on. */
export function prepareDataDir(cfg: OnpremConfig): void {
  try {
    mkdirSync(cfg.dataDir, { recursive: true });
  } catch (e) {
    throw new StartupError(`data directory ${cfg.dataDir} cannot be created: ${(e as Error).message}`, { cause: e });
  }
  let st;
  try {
    st = statSync(cfg.dataDir);
  } catch (e) {
    throw new StartupError(`data directory ${cfg.dataDir} is not usable: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isDirectory()) throw new StartupError(`data directory ${cfg.dataDir} is not a directory`);
  const probe = join(cfg.dataDir, `.write-test-${process.pid}`);
  try {
    writeFileSync(probe, 'ok');
    rmSync(probe);
  } catch (e) {
    throw new StartupError(`data directory ${cfg.dataDir} is not writable: ${(e as Error).message}`, { cause: e });
  }
  try {
    mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
    // Whoever can connect to the workers' sockets can speak for any user: only this uid may.
    chmodSync(cfg.runDir, 0o700);
  } catch (e) {
    throw new StartupError(`run directory ${cfg.runDir} cannot be created or made private: ${(e as Error).message}`, { cause: e });
  }
  const longest = join(cfg.runDir, 'peer-1023.sock');
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
    throw new StartupError(`run directory ${cfg.runDir} is too long for unix sockets (${Buffer.byteLength(longest)} > ${MAX_SOCKET_PATH} bytes); set IRIS_RUN_DIR to a shorter path`);
  }
}

/**
 * One server per data directory. The lock is a kernel lock, not a pid guess: the supervisor holds an
 * exclusive SQLite lock (fcntl byte-range locks) on LOCK_DB for as long as it lives, and the kernel drops it
 * when the process dies, however it dies. A pid check (`kill(pid, 0)`) was wrong both ways: a SIGKILLed
 * supervisor that its parent had not reaped yet (a zombie) still looked alive, and a recycled pid belonging to
 * any unrelated process blocked start-up for good. LOCK_FILE still gets the holder's pid, for operators and
 * for the "in use" message only; nothing decides on it.
 *
 * fcntl locks belong to the process and are released when *any* descriptor of the file is closed by it, so
 * nothing else in this process may open LOCK_DB (SQLite itself copes with its own connections).
 */
export function lockDataDir(cfg: OnpremConfig): () => void {
  const dbFile = join(cfg.dataDir, LOCK_DB);
  const pidFile = join(cfg.dataDir, LOCK_FILE);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(dbFile, { timeout: 0 });
  } catch (e) {
    throw new StartupError(`cannot open ${dbFile}: ${(e as Error).message}`, { cause: e });
  }
  try {
    // EXCLUSIVE locking mode keeps the lock after the statement; BEGIN EXCLUSIVE takes it now (no waiting:
    // timeout 0), and the transaction stays open until release() or process death.
    db.exec('PRAGMA locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (e) {
    db.close();
    const code = (e as { errcode?: unknown }).errcode;
    // SQLITE_BUSY (5) / SQLITE_LOCKED (6): another live process holds it.
    if (code === 5 || code === 6) {
      let holder = 'unknown pid';
      try {
        const pid = readFileSync(pidFile, 'utf8').trim();
        if (/^\d+$/.test(pid)) holder = `pid ${pid}`;
      } catch {
        // No pid recorded (yet): say so.
      }
      throw new StartupError(`data directory ${cfg.dataDir} is in use by another iris-onprem (${holder})`);
    }
    throw new StartupError(`cannot lock ${dbFile}: ${(e as Error).message}`, { cause: e });
  }
  try {
    writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  } catch (e) {
    db.close();
    throw new StartupError(`cannot write ${pidFile}: ${(e as Error).message}`, { cause: e });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    try {
      if (readFileSync(pidFile, 'utf8').trim() === String(process.pid)) rmSync(pidFile);
    } catch {
      // Already gone.
    }
    try {
      db.close(); // rolls back the empty transaction and drops the lock
    } catch {
      // The process is exiting anyway; the kernel drops the lock then.
    }
  };
}

/**
 * The worker count is fixed per data directory: a user's state lives in the SQLite file of the worker its id
 * hashes to, so a different count would look for it in the wrong file.
 */
export function workerCount(cfg: OnpremConfig): number {
  // Cluster mode: users live in partitions of the replicated log, not in a worker's file, so any count works (each
  // worker is a cluster member of its own) and none is recorded; a change only moves partitions between members.
  if (cfg.cluster) return cfg.workers ?? defaultWorkers();
  const file = join(cfg.dataDir, META_FILE);
  let recorded: number | null = null;
  try {
    const meta = JSON.parse(readFileSync(file, 'utf8')) as { workers?: unknown };
    if (typeof meta.workers === 'number' && Number.isInteger(meta.workers) && meta.workers > 0) recorded = meta.workers;
    else throw new StartupError(`${file} is damaged (no worker count)`);
  } catch (e) {
    if (e instanceof StartupError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new StartupError(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (recorded !== null) {
    if (cfg.workers !== null && cfg.workers !== recorded) {
      throw new StartupError(
        `data directory ${cfg.dataDir} was created with ${recorded} workers; it cannot run with ${cfg.workers} ` +
          `(users are placed by hash modulo the worker count). Start with --workers ${recorded}, or see docs/OPERATIONS.md "Changing the worker count".`,
      );
    }
    return recorded;
  }
  const n = cfg.workers ?? defaultWorkers();
  writeFileSync(file, JSON.stringify({ format: 1, workers: n, created: new Date().toISOString() }, null, 2) + '\n');
  return n;
}

/** Binds the port exclusively (no SO_REUSEPORT) for a moment: fails if anyone, even another Iris, holds it. */
export function probePort(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') reject(new StartupError(`port ${port} on ${host} is already in use`, { cause: e }));
      else if (e.code === 'EACCES') reject(new StartupError(`not allowed to listen on ${host}:${port} (ports below 1024 need privileges)`, { cause: e }));
      else if (e.code === 'EADDRNOTAVAIL') reject(new StartupError(`address ${host} is not available on this machine`, { cause: e }));
      else reject(new StartupError(`cannot listen on ${host}:${port}: ${e.message}`, { cause: e }));
    });
    srv.listen({ host, port, exclusive: true }, () => {
      const addr = srv.address();
      const actual = typeof addr === 'object' && addr ? addr.port : port;
      srv.close(() => resolve(actual));
    });
  });
}

