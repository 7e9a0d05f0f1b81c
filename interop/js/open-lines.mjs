// Open batches of tokens read from standard input, for cross-checks driven by
// another implementation (tests/test_interop_js.py drives it from tokenflow).
//
// Each input line is a JSON object {"cases": [case, ...]}, each case
// {"ring": key-ring text, "purpose": "access" | "refresh", "token": text,
// "now": seconds (or "nan", "inf", "-inf"), "leeway": seconds}. For each input
// line one output line comes back: {"results": [result, ...]}, each result
// {"claims": ...} or {"reason": TokenFailure value} or {"error": text} (a
// misuse or a bug: never expected). Claims are written so that a JSON reader
// tells integers from floats: an integer has digits only, a float always has a
// fraction or an exponent.

import { createInterface } from "node:readline";

import { InvalidToken, openToken, parseKeyRing } from "./tokenflow-v1.mjs";

const SPECIAL = { nan: Number.NaN, inf: Infinity, "-inf": -Infinity };
const rings = new Map();

function ring(text) {
  let parsed = rings.get(text);
  if (parsed === undefined) {
    parsed = parseKeyRing(text);
    rings.set(text, parsed);
  }
  return parsed;
}

function typed(value) {
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "number":
      if (Object.is(value, -0)) return "-0.0";
      return Number.isInteger(value) ? value.toExponential() : String(value);
    case "string":
    case "boolean":
      return JSON.stringify(value);
    default:
      break;
  }
  if (value === null) return "null";
  if (Array.isArray(value)) return `[${value.map(typed).join(",")}]`;
  const members = Object.keys(value).map((name) => `${JSON.stringify(name)}:${typed(value[name])}`);
  return `{${members.join(",")}}`;
}

function open({ ring: ringText, purpose, token, now, leeway }) {
  try {
    const clock = typeof now === "string" ? SPECIAL[now] : now;
    const claims = openToken(ring(ringText), purpose, token, clock, { leeway, integers: "bigint" });
    return `{"claims":${typed(claims)}}`;
  } catch (error) {
    if (error instanceof InvalidToken) return JSON.stringify({ reason: error.reason });
    return JSON.stringify({ error: `${error.name}: ${error.message}` });
  }
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  const { cases } = JSON.parse(line);
  process.stdout.write(`{"results":[${cases.map(open).join(",")}]}\n`);
}
