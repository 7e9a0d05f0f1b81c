// Run tokenflow's known-answer vectors (tests/vectors/*.json) through the
// JavaScript reader and print how many agree:
//
//   node interop/js/check-vectors.mjs
//
// open:    every token opens to exactly the expected claims (integers and
//          floats kept apart, every integer exact);
// seal:    sealing the claims with the vector's salt and nonce gives the
//          vector's token, byte for byte;
// invalid: every token is refused with the expected reason.
//
// Exits 1 if anything disagrees, after naming each disagreement on stderr.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import {
  InvalidToken,
  openToken,
  parseKeyRing,
  parseStrictJSON,
  sealToken,
} from "./tokenflow-v1.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const VECTORS = join(ROOT, "tests", "vectors");

// Vector files hold integers up to 2^64-1: read them with the strict reader,
// every integer a BigInt, so that nothing is rounded and 1 differs from 1.0.
function load(name) {
  // A vector file nests deeper than any claim set it holds (file, list, vector, claims).
  const text = readFileSync(join(VECTORS, name), "utf8");
  const data = parseStrictJSON(text, { integers: "bigint", maxDepth: 64 });
  if (data.version !== 1n || !Array.isArray(data.vectors) || data.vectors.length === 0) {
    throw new Error(`${name}: not a version 1 vector file`);
  }
  return data.vectors;
}

/** Deep equality that tells apart integer (BigInt) and float (Number), and 0.0 from -0.0. */
function sameJSON(a, b) {
  if (typeof a !== typeof b) return false;
  if (typeof a === "number") return Object.is(a, b);
  if (a === null || b === null || typeof a !== "object") return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => Object.hasOwn(b, name) && sameJSON(a[name], b[name]));
}

/** The same value with integers as Numbers where exact: how a JavaScript caller writes claims. */
function usual(value) {
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value;
  if (Array.isArray(value)) return value.map(usual);
  if (value === null || typeof value !== "object") return value;
  const copy = {};
  for (const [name, item] of Object.entries(value)) {
    const member = { value: usual(item), writable: true, enumerable: true, configurable: true };
    Object.defineProperty(copy, name, member);
  }
  return copy;
}

const hex = (text) => Buffer.from(text, "hex");
const show = (value) =>
  JSON.stringify(value, (_, v) => (typeof v === "bigint" ? `${v}n` : v));

function outcome(run) {
  try {
    return { claims: run() };
  } catch (error) {
    if (error instanceof InvalidToken) return { reason: error.reason };
    return { error: `${error.name}: ${error.message}` };
  }
}

const problems = [];
const counts = {};

function check(kind, vectors, agrees) {
  let agreed = 0;
  vectors.forEach((vector, index) => {
    const problem = agrees(vector);
    if (problem === null) agreed += 1;
    else problems.push(`${kind} #${index} (${vector.comment}): ${problem}`);
  });
  counts[kind] = `${agreed}/${vectors.length}`;
}

function open(vector, integers) {
  return outcome(() =>
    openToken(parseKeyRing(vector.keyring), vector.purpose, vector.token, Number(vector.now), {
      leeway: Number(vector.leeway),
      integers,
    }),
  );
}

check("open", load("open.json"), (vector) => {
  // Exactly as written (every integer a BigInt), and in the default form
  // (Numbers where exact) against the same claims read the same way.
  const exact = open(vector, "bigint");
  if (!("claims" in exact) || !sameJSON(exact.claims, vector.claims)) {
    return `expected ${show(vector.claims)}, got ${show(exact)}`;
  }
  const plain = open(vector, "auto");
  const expected = usual(vector.claims);
  if (!("claims" in plain) || !sameJSON(plain.claims, expected)) {
    return `with integers "auto": expected ${show(expected)}, got ${show(plain)}`;
  }
  return null;
});

check("seal", load("seal.json"), (vector) => {
  const seal = (claims) =>
    outcome(() =>
      sealToken(parseKeyRing(vector.keyring), vector.purpose, claims, {
        salt: hex(vector.salt),
        nonce: hex(vector.nonce),
      }),
    );
  // BigInt claims as read, then the same claims with Numbers where exact, as
  // a JavaScript caller would usually write them.
  for (const claims of [vector.claims, usual(vector.claims)]) {
    const sealed = seal(claims);
    if (sealed.claims !== vector.token) {
      return `expected ${vector.token}, got ${show(sealed.claims ?? sealed)}`;
    }
  }
  return null;
});

check("invalid", load("invalid.json"), (vector) => {
  const result = open(vector, "auto");
  return result.reason === vector.reason ? null : `expected ${vector.reason}, got ${show(result)}`;
});

for (const problem of problems) console.error(problem);
console.log(
  `open: ${counts.open} agree, seal: ${counts.seal} byte-identical, ` +
    `invalid: ${counts.invalid} refused with the same reason`,
);
process.exitCode = problems.length ? 1 : 0;
