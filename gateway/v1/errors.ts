/**
 * The reasons a v1 error frame (0xFE len:16 reason) carries, beyond the core's own error codes (protocol/errors.ts),
 * which go out under their names. The names the Erlang server used are kept where it had one (iris_proto.erl,
 * iris_session.erl); the others say what this gateway refused. docs/IRIS-V1.md lists them.
 */
export const V1_ERRORS = {
  // Framing (the Erlang decoder's names): the connection is closed after these on TCP, since no length says
  // where the next packet starts; a WebSocket message is its own frame, so there the connection continues.
  unknown_packet: 'an opcode this protocol does not have',
  username_too_long: 'a user name over 256 bytes',
  target_too_long: 'a target name over 256 bytes',
  recipient_too_long: 'a recipient name over 256 bytes',
  message_too_long: 'a message over 64 KiB',
  msgid_too_long: 'a message id over 64 bytes',
  batch_too_large: 'a batch over 1 MiB or 1000 messages',
  cbor_too_large: 'a CBOR payload over 256 KiB',
  keybundle_too_large: 'a key bundle over 8 KiB',
  e2ee_header_too_large: 'an E2EE header over 1 KiB',
  e2ee_ciphertext_too_large: 'an E2EE ciphertext over 64 KiB',
  group_name_too_long: 'a group name over 256 bytes',
  group_id_too_long: 'a group id over 256 bytes',
  group_header_too_large: 'a group message header over 1 KiB',
  group_ciphertext_too_large: 'a group ciphertext over 64 KiB',
  sender_key_too_large: 'a sender key over 8 KiB',
  invalid_group_header: 'a group message header that is not a CBOR map',
  buffer_overflow: 'more bytes buffered for one packet than any packet can have',
  incomplete_packet: 'a WebSocket message that ends inside a packet',
  // Session.
  login_required: 'this packet needs a LOGIN first',
  already_logged_in: 'a second LOGIN on one connection',
  unknown_msg_id: 'an ACK or read receipt for an id this connection was not sent',
  server_only: 'a packet only a server sends',
  unsupported: 'an opcode this gateway does not map (docs/IRIS-V1.md says why)',
  server_full: 'the worker holds IRIS_MAX_CONNECTIONS connections; the connection is closed',
  // Cluster mode.
  relay_refused: 'a connection relayed from another node whose LOGIN does not verify here for the user it names',
} as const;

export type V1ErrorReason = keyof typeof V1_ERRORS;
