// The wire, shared by client and server: see docs/protocol.md and docs/architecture.md.
export { isProtocolError, ProtocolError, type ProtocolErrorReason, showBytes } from './errors.js';
export {
  authProof,
  describeServer,
  EXTENSIONS,
  type Extension,
  type ExtensionMessage,
  type ExtensionVerb,
  encodeExtension,
  encodeExtensionPayload,
  FIRST_BEAT_WITHIN_MS,
  type HaveEntry,
  isOffer,
  OFFER_ANNEX,
  type PeerDescription,
  PROTOCOL_TAG,
  parseExtension,
  parseExtensionList,
  parseServerDescription,
  type ServerLoad,
} from './extensions.js';
export {
  type OutgoingFile,
  type ReceiveOptions,
  receiveFilestream,
  type SendOptions,
  sendFilestream,
  type TransferredFile,
} from './filestream.js';
export {
  decodeHeader,
  decodeRequest,
  describeHeader,
  EXTENSION_CODE,
  encodeHeader,
  encodePacket,
  encodeRequest,
  expectFlagged,
  expectPlain,
  FLAGS,
  type Flags,
  HEADER_SIZE,
  type Header,
  MAX_ANNEX,
  PLAIN_CODES,
  type PlainCode,
  parseDecimal,
  REQUEST_SIZE,
  type Request,
} from './header.js';
export {
  DEFAULT_LIMITS,
  MAX_DECIMAL_PAYLOAD,
  type ProtocolLimits,
  withDefaults,
} from './limits.js';
export { applicableMode, formatMode, parseMode } from './modes.js';
export { prepareInside, resolveInside, wireNameSegments } from './names.js';
export { FramedReader, type FramedReaderOptions } from './reader.js';
export { drained, hold, write } from './socket-writes.js';
export { loadToken, newNonce, TOKEN_ENV, Token, TokenError } from './token.js';
