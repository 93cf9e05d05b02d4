// Which farm answers make the client ask for the working directory as "." instead of "":
// Buildfarm's refusal of an output path (its status, message and violation, as its source
// writes them) does; its other FAILED_PRECONDITION answers (missing blobs) and other codes
// do not, so a lost input is never mistaken for a refused output directory.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import { refusesEmptyOutputPath } from '../../src/reapi/executor.js';
import {
  PreconditionFailure_ViolationSchema,
  PreconditionFailureSchema,
} from '../../src/reapi/gen/google/rpc/status_pb.js';
import { BUILDFARM_OUTPUT_ANCESTOR } from '../../src/reapi/server.js';

const violations = (...v: Array<{ type: string; subject: string; description: string }>) => [
  anyPack(
    PreconditionFailureSchema,
    create(PreconditionFailureSchema, {
      violations: v.map((x) => create(PreconditionFailure_ViolationSchema, x)),
    }),
  ),
];
const HASH = `${'ab'.repeat(32)}/138`;

describe('refusesEmptyOutputPath', { timeout: 10_000 }, () => {
  it('is true for Buildfarm\'s refusal of the output directory ""', () => {
    assert.equal(
      refusesEmptyOutputPath({
        code: status.FAILED_PRECONDITION,
        message: `Action ${HASH} is invalid: ${BUILDFARM_OUTPUT_ANCESTOR}.`,
        details: violations({
          type: 'INVALID',
          subject: '',
          description: BUILDFARM_OUTPUT_ANCESTOR,
        }),
      }),
      true,
    );
    // The violation alone decides, whatever the words.
    assert.equal(
      refusesEmptyOutputPath({
        code: status.FAILED_PRECONDITION,
        message: 'invalid action',
        details: violations({ type: 'INVALID', subject: '', description: 'no' }),
      }),
      true,
    );
  });

  it('is true for INVALID_ARGUMENT naming the output directory or path, without details', () => {
    for (const message of ['output directory "" is not allowed', 'Invalid output path: empty']) {
      assert.equal(
        refusesEmptyOutputPath({ code: status.INVALID_ARGUMENT, message }),
        true,
        message,
      );
    }
  });

  it('is false for missing blobs, other invalid subjects, and other codes', () => {
    assert.equal(
      refusesEmptyOutputPath({
        code: status.FAILED_PRECONDITION,
        message: `Action ${HASH} is invalid: The command was not found in the CAS.`,
        details: violations({
          type: 'MISSING',
          subject: `blobs/${HASH}`,
          description: 'The command was not found in the CAS.',
        }),
      }),
      false,
    );
    assert.equal(
      refusesEmptyOutputPath({
        code: status.FAILED_PRECONDITION,
        message: `Action ${HASH} is invalid: argument list is empty.`,
        details: violations({
          type: 'INVALID',
          subject: 'The `Command` of the `Action` was invalid.',
          description: 'argument list is empty',
        }),
      }),
      false,
    );
    for (const code of [status.INTERNAL, status.UNAVAILABLE, status.PERMISSION_DENIED]) {
      assert.equal(
        refusesEmptyOutputPath({ code, message: 'output directory "" is not allowed' }),
        false,
        status[code],
      );
    }
  });
});
