/**
 * chevrotain's run-time values, loaded from the single-file ES bundle its package ships
 * (`lib/chevrotain.mjs`, the same code) instead of its module tree. The tree is some 700
 * ES modules (lodash-es has one per function), and loading them was most of every
 * `rake-ts` start: about 0.65 s of 1 s on the build machine, against 30 ms for the bundle
 * (docs/benchmarks.md, "Overhead"). Types still come from `chevrotain` itself. If a release
 * stops shipping the bundle, the package entry is loaded instead.
 */
import type * as Chevrotain from 'chevrotain';

async function load(): Promise<typeof Chevrotain> {
  try {
    // The package's exports map hides lib/, so the bundle is found next to the entry
    // (lib/src/api.js → lib/chevrotain.mjs).
    const bundle = new URL('../chevrotain.mjs', import.meta.resolve('chevrotain'));
    return (await import(bundle.href)) as typeof Chevrotain;
  } catch {
    return import('chevrotain');
  }
}

const chevrotain = await load();

export const { createToken, EmbeddedActionsParser, Lexer } = chevrotain;
export type EmbeddedActionsParser = Chevrotain.EmbeddedActionsParser;
export type Lexer = Chevrotain.Lexer;
