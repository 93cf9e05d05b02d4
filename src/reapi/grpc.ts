import type { DescMessage, DescMethod, DescService, MessageShape } from '@bufbuild/protobuf';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';

/**
 * A gRPC method as @grpc/grpc-js wants it, from our schema's descriptor: the path, the
 * streaming kinds, and the canonical binary codec of @bufbuild/protobuf. grpc-js's own
 * loader (protobufjs) is never used: it writes default values, so its digests differ.
 */
export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  const input = method.input;
  const output = method.output;
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream:
      method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
    responseStream:
      method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
    requestSerialize: (m: unknown) => Buffer.from(toBinary(input, m as MessageShape<typeof input>)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: unknown) =>
      Buffer.from(toBinary(output, m as MessageShape<typeof output>)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
    originalName: method.localName,
  };
}

/** Every method of a service, keyed by its local (camelCase) name. */
export function serviceDefinition(service: DescService): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) def[m.localName] = methodDefinition(m);
  return def as ServiceDefinition;
}

/** The message type of a method's input or output, for typed wrappers. */
export type Shape<D extends DescMessage> = MessageShape<D>;
