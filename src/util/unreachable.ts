/** Makes a `switch` over a union exhaustive: the call only type-checks when `value` is `never`. */
export function unreachable(value: never, what = 'value'): never {
  throw new Error(`unreachable ${what}: ${JSON.stringify(value)}`);
}
