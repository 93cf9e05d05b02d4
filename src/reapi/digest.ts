import { createHash } from 'node:crypto';
import { create, type DescMessage, type MessageShape, toBinary } from '@bufbuild/protobuf';
import {
  type Digest,
  DigestSchema,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';

/** SHA-256 of `data`, lower-case hex: REAPI's only digest function here. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The digest of a blob. */
export function digestOf(data: Uint8Array): Digest {
  return create(DigestSchema, { hash: sha256Hex(data), sizeBytes: BigInt(data.length) });
}

/** A digest from its parts. */
export function makeDigest(hash: string, size: number | bigint): Digest {
  return create(DigestSchema, { hash, sizeBytes: BigInt(size) });
}

/**
 * A message in the spec's canonical binary form (fields in number order, default values
 * left out, which is what toBinary writes for proto3) and its digest. Whatever names a
 * message by digest (an Action, a Command, a Directory) must be encoded through here, so that
 * rake-ts's digests are every other REAPI peer's.
 */
export function encodeMessage<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): { bytes: Uint8Array; digest: Digest } {
  const bytes = toBinary(schema, message);
  return { bytes, digest: digestOf(bytes) };
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Why a digest is malformed, or undefined when it is a well-formed SHA-256 digest. */
export function digestProblem(d: Digest | undefined): string | undefined {
  if (d === undefined) return 'missing digest';
  if (!HEX64.test(d.hash))
    return `digest hash "${d.hash.slice(0, 80)}" is not 64 lower-case hex digits (SHA-256)`;
  if (d.sizeBytes < 0n) return `digest size ${d.sizeBytes} is negative`;
  return undefined;
}

/** `hash/size`, the key a digest is stored and named by (as in ByteStream resource names). */
export function digestKey(d: Digest): string {
  return `${d.hash}/${d.sizeBytes}`;
}

/** The digest of the empty blob, which every CAS holds without being sent it. */
export const EMPTY_DIGEST: Digest = digestOf(new Uint8Array(0));
