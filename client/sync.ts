/**
 * Multi-device sync on the client (docs/PROTOCOL.md 9.10): a `sent` entry in this user's stream is a message one
 * of its devices sent. The server writes a send's send_ack before the entry on the sending socket, so this
 * client knows its own by the ids in its acks and emits 'sent' only for the others' (it acks them all).
 *
 * Bounded: an entry comes back only to devices the server writes sent entries for (a user with several devices,
 * or history kept), and only while this client is connected; an id whose entry never comes (the server wrote
 * none) is dropped oldest first.
 */
const MAX_OWN = 4096;

export class OwnSends {
  private readonly ids = new Set<string>();

  add(msg: string): void {
    this.ids.add(msg);
    if (this.ids.size > MAX_OWN) this.ids.delete(this.ids.values().next().value!);
  }

  /** Whether `msg` is one of this client's sends; forgotten once asked (each entry comes once). */
  take(msg: string): boolean {
    return this.ids.delete(msg);
  }
}
