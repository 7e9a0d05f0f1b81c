// Unit tests of the JavaScript reader, on Node's built-in test runner:
//
//   node --test interop/js/tokenflow-v1.test.mjs
//
// The known-answer vectors are run by check-vectors.mjs, and
// tests/test_interop_js.py compares this reader with tokenflow on random
// tokens. These tests cover what neither reaches: misuse, the key-ring string
// form, secrets kept out of every printed form, and claims rules whose tokens
// tokenflow itself never seals (deep nesting, duplicate or inherited members).

import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";
import { test } from "node:test";
import { inspect } from "node:util";

import {
  InvalidToken,
  KeyRing,
  KeyRingError,
  MAX_CLAIMS_DEPTH,
  TokenFailure,
  TokenTooLarge,
  openToken,
  parseKeyRing,
  parseStrictJSON,
  sealToken,
} from "./tokenflow-v1.mjs";

// A fixed, obviously non-secret key (the spec's example: "do not use this key").
const SECRET = "13QyoC3ggdVGsVqKB0I_D85USa8D491iuanniQ3xt7M";
const RING_TEXT = `*k7qm2x:${SECRET}`;
const RING = parseKeyRing(RING_TEXT);
const NOW = 1_700_000_000;
const CLAIMS = { sub: "user-12345", iat: NOW, exp: NOW + 120 };

// Seal arbitrary plaintext bytes, written here from the specification alone, so
// that tokens the sealer refuses to make (bad claims) can be opened.
function sealRaw(plaintext, { purpose = "A", kid = "k7qm2x", secret = SECRET } = {}) {
  const salt = Buffer.alloc(8, 7);
  const nonce = Buffer.alloc(12, 9);
  const header = Buffer.concat([Buffer.from([1, kid.length]), Buffer.from(kid), salt]);
  const body = Buffer.from(plaintext);
  const fill = Buffer.alloc((3 - ((header.length + 28 + body.length) % 3)) % 3, " ");
  const subkey = createHmac("sha256", Buffer.from(secret, "base64url"))
    .update("tokenflow/v1 subkey")
    .update(salt)
    .update(Buffer.from([1]))
    .digest();
  const cipher = createCipheriv("aes-256-gcm", subkey, nonce);
  cipher.setAAD(Buffer.concat([header, Buffer.from(purpose)]));
  const sealed = Buffer.concat([cipher.update(Buffer.concat([body, fill])), cipher.final()]);
  return Buffer.concat([header, nonce, sealed, cipher.getAuthTag()]).toString("base64url");
}

// The filled plaintext of a token sealed under SECRET, trailing fill removed.
function plaintextOf(token) {
  const raw = Buffer.from(token, "base64url");
  const end = 2 + raw[1] + 8;
  const subkey = createHmac("sha256", Buffer.from(SECRET, "base64url"))
    .update("tokenflow/v1 subkey")
    .update(raw.subarray(end - 8, end))
    .update(Buffer.from([1]))
    .digest();
  const decipher = createDecipheriv("aes-256-gcm", subkey, raw.subarray(end, end + 12));
  decipher.setAAD(Buffer.concat([raw.subarray(0, end), Buffer.from("A")]));
  decipher.setAuthTag(raw.subarray(raw.length - 16));
  const plain = decipher.update(raw.subarray(end + 12, raw.length - 16));
  decipher.final();
  return plain.toString("utf8").trimEnd();
}

function thrown(run) {
  try {
    run();
  } catch (error) {
    return error;
  }
  return assert.fail("nothing was thrown");
}

function reasonOf(run) {
  try {
    run();
  } catch (error) {
    if (error instanceof InvalidToken) return error.reason;
    throw error;
  }
  return "opened";
}

const openRaw = (text, options) => openToken(RING, "access", sealRaw(text), NOW, options);
const reasonRaw = (text) => reasonOf(() => openRaw(text));
const nested = (depth, open, close, inner = "1") =>
  open.repeat(depth) + inner + close.repeat(depth);

// -- opening -----------------------------------------------------------------------

test("a sealed token opens to its claims, with integers as Numbers", () => {
  const claims = { ...CLAIMS, roles: ["admin"], score: 0.5 };
  assert.deepEqual(openToken(RING, "access", sealToken(RING, "access", claims), NOW), claims);
});

test("every seal draws a new salt and nonce", () => {
  const a = sealToken(RING, "access", CLAIMS);
  const b = sealToken(RING, "access", CLAIMS);
  assert.notEqual(a, b);
  assert.notEqual(a.slice(0, 22), b.slice(0, 22)); // the headers differ: new salt
});

test("the purpose is bound: an access token never opens as a refresh token", () => {
  const token = sealToken(RING, "access", CLAIMS);
  assert.equal(reasonOf(() => openToken(RING, "refresh", token, NOW)), TokenFailure.TAG_MISMATCH);
});

test("anything but a string is malformed, as a missing cookie is", () => {
  const token = sealToken(RING, "access", CLAIMS);
  for (const notText of [undefined, null, 42, Buffer.from(token), new String(token), [token]]) {
    assert.equal(reasonOf(() => openToken(RING, "access", notText, NOW)), TokenFailure.MALFORMED);
  }
});

test("the error says nothing about the failed check", () => {
  const error = thrown(() => openToken(RING, "access", "AAAA", NOW));
  assert.ok(error instanceof InvalidToken);
  assert.equal(error.message, "invalid token");
  assert.equal(String(error), "InvalidToken: invalid token");
  assert.equal(error.reason, TokenFailure.UNSUPPORTED_VERSION);
});

test("misuse raises TypeError or RangeError, never InvalidToken", () => {
  const token = sealToken(RING, "access", CLAIMS);
  assert.throws(() => openToken(RING_TEXT, "access", token, NOW), TypeError);
  assert.throws(() => openToken(RING, "A", token, NOW), TypeError);
  assert.throws(() => openToken(RING, "access", token, String(NOW)), TypeError);
  assert.throws(() => openToken(RING, "access", token, BigInt(NOW)), TypeError);
  assert.throws(() => openToken(RING, "access", token, NOW, { leeway: 301 }), RangeError);
  assert.throws(() => openToken(RING, "access", token, NOW, { leeway: 1.5 }), RangeError);
  assert.throws(() => openToken(RING, "access", token, NOW, { integers: "number" }), TypeError);
  assert.throws(() => new KeyRing(), TypeError);
});

test("a NaN clock refuses every token", () => {
  const token = sealToken(RING, "access", CLAIMS);
  assert.equal(reasonOf(() => openToken(RING, "access", token, Number.NaN)), TokenFailure.EXPIRED);
});

test("time checks are exact at 64-bit claims and fractional clocks", () => {
  const claims = { sub: "u", iat: -(2n ** 63n), exp: 2n ** 64n - 1n };
  const token = sealToken(RING, "access", claims);
  assert.deepEqual(openToken(RING, "access", token, 1.8446744073709550e19, { leeway: 0 }), claims);
  // 2^64 as a double is past exp + 0 = 2^64 - 1.
  assert.equal(
    reasonOf(() => openToken(RING, "access", token, 2 ** 64, { leeway: 0 })),
    TokenFailure.EXPIRED,
  );
  const edge = sealToken(RING, "access", CLAIMS);
  const at = (now) => reasonOf(() => openToken(RING, "access", edge, now, { leeway: 5 }));
  assert.equal(at(NOW + 124.999), "opened");
  assert.equal(at(NOW + 125), "expired");
  assert.equal(at(NOW - 5), "opened");
  assert.equal(at(NOW - 5.001), "not_yet_valid");
});

// -- claims ---------------------------------------------------------------------------

test(`claims nest at most ${MAX_CLAIMS_DEPTH} levels: 32 opens, 33 is bad_claims`, () => {
  assert.equal(MAX_CLAIMS_DEPTH, 32);
  const base = '"sub":"u","iat":1700000000,"exp":1700000120';
  for (const [open, close] of [["[", "]"], ['{"a":', "}"]]) {
    // The top-level object is level 1, so 31 more containers make 32.
    assert.equal(reasonRaw(`{${base},"x":${nested(31, open, close)}}`), "opened");
    assert.equal(reasonRaw(`{${base},"x":${nested(32, open, close)}}`), "bad_claims");
  }
  assert.equal(reasonRaw(`{${base},"x":${nested(31, "[", "]", "[]")}}`), "bad_claims");
  assert.equal(reasonRaw(`{${base},"x":${nested(30, "[", "]", "{}")}}`), "opened");
  // Far deeper than any stack: refused at level 33, whatever follows.
  assert.equal(reasonRaw(`{${base},"x":${"[".repeat(2000)}`), "bad_claims");
});

test("a repeated member name: the last occurrence wins", () => {
  const opened = openRaw('{"sub":"a","iat":1700000000,"exp":5,"sub":"b","exp":1700000120}');
  assert.deepEqual(opened, { sub: "b", iat: NOW, exp: NOW + 120 });
  // ... so a later float exp makes the claims bad, and a later integer one good.
  const claims = '"sub":"u","iat":1700000000';
  assert.equal(reasonRaw(`{${claims},"exp":1700000120,"exp":1700000120.0}`), "bad_claims");
  assert.equal(reasonRaw(`{${claims},"exp":1.5,"exp":1700000120}`), "opened");
});

test('"__proto__" is an ordinary member and cannot change the prototype', () => {
  const times = '"iat":1700000000,"exp":1700000120';
  const opened = openRaw(`{"__proto__":{"sub":"admin"},${times},"sub":"u"}`);
  assert.equal(Object.getPrototypeOf(opened), Object.prototype);
  assert.deepEqual(Object.keys(opened), ["__proto__", "iat", "exp", "sub"]);
  assert.equal(Object.getOwnPropertyDescriptor(opened, "__proto__").value.sub, "admin");
  assert.equal(reasonRaw(`{"__proto__":{"sub":"admin"},${times}}`), "bad_claims");
});

test("inherited members never stand in for missing claims", () => {
  Object.prototype.sub = "admin";
  try {
    assert.equal(reasonRaw('{"iat":1700000000,"exp":1700000120}'), "bad_claims");
  } finally {
    delete Object.prototype.sub;
  }
});

test("integers are exact to 64 bits; beyond, they are floats", () => {
  const read = (text) => parseStrictJSON(text, { integers: "bigint" });
  assert.equal(read("18446744073709551615"), 2n ** 64n - 1n);
  assert.equal(read("-9223372036854775808"), -(2n ** 63n));
  assert.equal(read("18446744073709551616"), 2 ** 64);
  assert.equal(read("-9223372036854775809"), -(2 ** 63));
  assert.equal(read("-0"), 0n);
  assert.ok(Object.is(read("-0.0"), -0));
  assert.equal(read("17e8"), 1.7e9);
  assert.equal(read("1.0"), 1);
  assert.equal(typeof read("1.0"), "number");
  // "auto": Numbers up to 2^53, BigInts beyond, never a rounded integer.
  assert.equal(parseStrictJSON("9007199254740991"), 2 ** 53 - 1);
  assert.equal(parseStrictJSON("9007199254740993"), 2n ** 53n + 1n);
});

test("JSON beyond RFC 8259 is refused", () => {
  const refused = [
    "", " ", "\ufeff{}", "{}x", "{} {}", "{,}", '{"a":1,}', "[1,]", "[1 2]", '{"a" 1}', "{'a':1}",
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0".repeat(400), "01", "1.", ".5",
    "+1", "-", "1e", "1e+", "0x10", "True", "nul", "\f{}", "\v{}", "\u00a0{}", "{}\u0000",
    '"\\ud800"', '"\\udc00"', '"\\udfff\\ud800"', '"\\ud800\\ud800"', '"\\ud83dx"',
    '"\\ud83d\\u0041"', '"\\ud83d', '"\\x41"', '"\\U0041"', '"\\u00"', '"\\u00g1"',
    '"a\u0001"', '"a\nb"', '"abc', '"\\',
  ];
  for (const text of refused) {
    assert.throws(() => parseStrictJSON(text), SyntaxError, JSON.stringify(text));
  }
  const accepted = {
    ' \t\r\n{"a":[true,false,null]} \t\r\n': { a: [true, false, null] },
    '"\\ud83d\\udd11 \\uD83D\\uDD11 \\u00e9\\u00E9"': "🔑 🔑 éé",
    '"\\/\\b\\f\\n\\r\\t\\"\\\\"': "/\b\f\n\r\t\"\\",
    '"\u007f\u2028\uffff"': "\u007f\u2028\uffff",
    "1.7976931348623157e308": 1.7976931348623157e308,
    "1e-400": 0,
    "0e999999": 0,
    "1E000000000000000000000000001": 10,
  };
  for (const [text, value] of Object.entries(accepted)) {
    assert.deepEqual(parseStrictJSON(text), value, JSON.stringify(text));
  }
});

test("claims must be UTF-8", () => {
  for (const bytes of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]]) {
    const plaintext = Buffer.concat([
      Buffer.from('{"sub":"'),
      Buffer.from(bytes),
      Buffer.from('","iat":1700000000,"exp":1700000120}'),
    ]);
    assert.equal(reasonRaw(plaintext), "bad_claims");
  }
});

// -- sealing ---------------------------------------------------------------------------

test("claims that break the format are refused when sealed", () => {
  const bad = [
    null, [], "claims", { iat: NOW, exp: NOW }, { sub: 1, iat: NOW, exp: NOW },
    { ...CLAIMS, iat: 1.5 }, { ...CLAIMS, exp: String(NOW) }, { ...CLAIMS, exp: true },
    { ...CLAIMS, exp: 2 ** 53 }, { ...CLAIMS, exp: 2n ** 64n }, { ...CLAIMS, x: 2n ** 64n },
    { ...CLAIMS, x: Number.NaN }, { ...CLAIMS, x: Infinity }, { ...CLAIMS, x: undefined },
    { ...CLAIMS, x: () => 1 }, { ...CLAIMS, x: new Date(0) }, { ...CLAIMS, x: new Set() },
    { ...CLAIMS, x: "\ud800" }, { ...CLAIMS, ["\udc00"]: 1 }, new Map([[1, 2]]),
    { ...CLAIMS, x: JSON.parse(nested(32, "[", "]")) },
  ];
  const cyclic = { ...CLAIMS };
  cyclic.self = cyclic;
  for (const claims of [...bad, cyclic]) {
    assert.throws(() => sealToken(RING, "access", claims), TypeError, inspect(claims));
  }
  assert.equal(reasonOf(() => openToken(RING, "access",
    sealToken(RING, "access", { ...CLAIMS, x: JSON.parse(nested(31, "[", "]")) }), NOW)), "opened");
});

test("members keep the caller's order; a Map fixes it where an object would not", () => {
  const map = new Map([["sub", "u"], ["iat", NOW], ["exp", NOW], ["7", 1]]);
  const times = `"iat":${NOW},"exp":${NOW}`;
  assert.equal(plaintextOf(sealToken(RING, "access", map)), `{"sub":"u",${times},"7":1}`);
  // An object lists integer-like names first, whatever order they were written in.
  const object = { sub: "u", iat: NOW, exp: NOW, 7: 1 };
  assert.equal(plaintextOf(sealToken(RING, "access", object)), `{"7":1,"sub":"u",${times}}`);
});

test("text is UTF-8 with only quote, backslash and controls escaped, as tokenflow writes", () => {
  const sub = 'j\u00fcrgen "\u00f6" \\ / \u2028 \n\t\u0000\u001f\u007f \u{1f511}';
  assert.equal(
    plaintextOf(sealToken(RING, "access", { sub, iat: 1, exp: 2 })),
    '{"sub":"j\u00fcrgen \\"\u00f6\\" \\\\ / \u2028 \\n\\t\\u0000\\u001f\u007f \u{1f511}",' +
      '"iat":1,"exp":2}',
  );
});

test("integers beyond 2^53 given as Numbers travel as the floats they are", () => {
  const claims = { ...CLAIMS, big: 2 ** 60, exact: 2n ** 60n };
  const token = sealToken(RING, "access", claims);
  assert.match(plaintextOf(token), /"big":1\.152921504606847e\+18,"exact":1152921504606846976}/);
  const opened = openToken(RING, "access", token, NOW, { integers: "bigint" });
  assert.equal(opened.big, 2 ** 60);
  assert.equal(opened.exact, 2n ** 60n);
});

test("a fixed salt needs a fixed nonce, of the right lengths", () => {
  assert.throws(() => sealToken(RING, "access", CLAIMS, { salt: Buffer.alloc(8) }), TypeError);
  const nonce = Buffer.alloc(12);
  for (const salt of [Buffer.alloc(7), "00".repeat(8)]) {
    assert.throws(() => sealToken(RING, "access", CLAIMS, { salt, nonce }), TypeError);
  }
});

test("a cookie over 4096 bytes is refused when sealed; one exactly at the budget is not", () => {
  // With the 16-byte default access cookie name, the longest token is 4076 characters.
  const claims = (padding) => ({ ...CLAIMS, pad: "x".repeat(padding) });
  let padding = 0;
  const length = (n) => sealToken(RING, "access", claims(n), { cookieName: "x" }).length;
  while (length(padding + 1) <= 4076) padding += 1;
  assert.equal(sealToken(RING, "access", claims(padding)).length, 4076);
  const error = thrown(() => sealToken(RING, "access", claims(padding + 1)));
  assert.ok(error instanceof TokenTooLarge);
  assert.equal(error.cookieName, "__Host-tf_access");
  assert.equal(error.size, 16 + 1 + 4080);
  assert.equal(error.budget, 4096);
  // Exactly at the budget: a 19-byte name, "=" and 4076 characters make 4096 bytes.
  const atBudget = { cookieName: "__Host-tf_access_19" };
  assert.equal(sealToken(RING, "access", claims(padding), atBudget).length, 4076);
  const overBudget = { cookieName: "__Host-tf_access_20b" };
  assert.equal(thrown(() => sealToken(RING, "access", claims(padding), overBudget)).size, 4097);
});

// -- the key ring ------------------------------------------------------------------------

const OTHER = "Xc1mF0yJqk2Rr8n3V5bT7wZpL4sH6dG9aE1uI0oP2xQ";

test("a key ring parses; the order of entries carries no meaning", () => {
  const ring = parseKeyRing(` k3ab9z:${OTHER} ,\t*k7qm2x:${SECRET}\n`);
  assert.equal(ring.active, "k7qm2x");
  assert.deepEqual(ring.kids, ["k7qm2x", "k3ab9z"]);
  assert.ok(ring.has("k3ab9z") && !ring.has("k7qm2"));
  const token = sealToken(RING, "access", CLAIMS);
  assert.deepEqual(openToken(ring, "access", token, NOW), CLAIMS);
});

test("surrounding whitespace is what tokenflow strips, not what JavaScript's trim() does", () => {
  assert.equal(parseKeyRing(`\u001c*k7qm2x:${SECRET}\u0085`).active, "k7qm2x");
  assert.throws(() => parseKeyRing(`\ufeff*k7qm2x:${SECRET}`), KeyRingError);
});

test("key ids that name Object.prototype's members are ordinary ids", () => {
  const ring = parseKeyRing(`*__proto__:${SECRET},constructor:${OTHER}`);
  const token = sealToken(ring, "access", CLAIMS);
  assert.deepEqual(openToken(ring, "access", token, NOW), CLAIMS);
  assert.equal(reasonOf(() => openToken(RING, "access", token, NOW)), TokenFailure.UNKNOWN_KEY);
  const toString = parseKeyRing(`*toString:${SECRET}`);
  assert.equal(reasonOf(() => openToken(toString, "access", token, NOW)), TokenFailure.UNKNOWN_KEY);
});

test("broken rings are refused, and no message or printed form shows a secret", () => {
  const nonCanonical = `${SECRET.slice(0, 42)}N`; // the last character's 2 spare bits set
  assert.notEqual(Buffer.from(nonCanonical, "base64url").toString("base64url"), nonCanonical);
  const broken = [
    "", "  ", ",", `${SECRET}`, `k7qm2x:${SECRET}`, `*k7qm2x:${SECRET},*k3ab9z:${OTHER}`,
    `*k7qm2x:${SECRET},k7qm2x:${OTHER}`, `*k7qm2x:${SECRET},`, `**k7qm2x:${SECRET}`,
    `*k7qm2x:${SECRET}=`, `*k7qm2x:${SECRET.slice(0, 42)}`, `*k7qm2x:${nonCanonical}`,
    `*k7qm2x:${SECRET.replace(/[-_]/, "+")}`, `*k7qm2x:${SECRET.replace(/[-_]/, "/")}`,
    `*k7.qm:${SECRET}`, `*${"k".repeat(17)}:${SECRET}`, `*:${SECRET}`, `*${SECRET}:k7qm2x`,
  ];
  for (const text of broken) {
    const error = thrown(() => parseKeyRing(text));
    assert.ok(error instanceof KeyRingError, `${error}`);
    for (const secret of [SECRET, OTHER, nonCanonical, SECRET.slice(0, 42)]) {
      assert.ok(!error.message.includes(secret), error.message);
    }
  }
  assert.throws(() => parseKeyRing(undefined), KeyRingError);
  const ring = parseKeyRing(`*k7qm2x:${SECRET},k3ab9z:${OTHER}`);
  const inspected = inspect(ring, { showHidden: true, depth: 9 });
  for (const shown of [String(ring), inspected, JSON.stringify(ring)]) {
    assert.ok(shown.includes("k7qm2x") && shown.includes("k3ab9z"), shown);
    for (const secret of [SECRET, OTHER]) {
      assert.ok(!shown.includes(secret), shown);
      assert.ok(!shown.includes(Buffer.from(secret, "base64url").toString("hex")), shown);
    }
  }
  assert.deepEqual(Object.keys(ring), []);
});
