// tokenflow token format v1 for Node.js: open (and, for interop checks, seal)
// the access and refresh tokens that tokenflow puts in cookies.
//
// Written from docs/token-format.md, on Node's built-in crypto only (no npm
// package). The validation order, the reasons and the claims rules are the
// specification's; the comments below say where JavaScript needs more care
// than the text of the specification suggests.
//
//   token   = base64url-nopad( header || nonce || AES-256-GCM-Seal(subkey, nonce, plaintext, ad) )
//   header  = 0x01 || kid_len || kid || salt[8]
//   subkey  = HMAC-SHA256(key, "tokenflow/v1 subkey" || salt || 0x01)   (HKDF-Expand, L = 32)
//   ad      = header || "A" (access) or "R" (refresh)

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  randomBytes,
} from "node:crypto";

export const VERSION = 1;
export const SALT_BYTES = 8;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** Bytes a browser keeps for one cookie's `name=value`; also the longest token text. */
export const COOKIE_BUDGET = 4096;
/** The deepest nesting of objects and arrays a claim set may have (the top level is 1). */
export const MAX_CLAIMS_DEPTH = 32;

const MAX_TOKEN_CHARS = COOKIE_BUDGET;
const MIN_PLAINTEXT = 2; // "{}", the shortest JSON object
const MAX_LEEWAY = 300;
const SUBKEY_INFO = Buffer.from("tokenflow/v1 subkey", "ascii");
const ONE = Buffer.from([1]);
const VERSION_BYTE = Buffer.from([VERSION]);
const FILL = [Buffer.alloc(0), Buffer.from(" "), Buffer.from("  ")];
const PURPOSE_BYTES = { access: Buffer.from("A"), refresh: Buffer.from("R") };
const DEFAULT_COOKIE_NAMES = { access: "__Host-tf_access", refresh: "__Host-tf_refresh" };
const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/** The purposes a token can be sealed for. */
export const Purpose = Object.freeze({ ACCESS: "access", REFRESH: "refresh" });

/** Why a token was refused: the same strings as Python's `tokenflow.TokenFailure` values. */
export const TokenFailure = Object.freeze({
  MALFORMED: "malformed",
  UNSUPPORTED_VERSION: "unsupported_version",
  UNKNOWN_KEY: "unknown_key",
  TAG_MISMATCH: "tag_mismatch",
  BAD_CLAIMS: "bad_claims",
  EXPIRED: "expired",
  NOT_YET_VALID: "not_yet_valid",
});

// -- errors -----------------------------------------------------------------------

/**
 * Every refused token. The message is always "invalid token", whatever failed;
 * `reason` (a `TokenFailure` value) is for logs and tests and must never reach
 * the client, which only ever sees a 401.
 */
export class InvalidToken extends Error {
  constructor(reason) {
    super("invalid token");
    this.name = "InvalidToken";
    this.reason = reason;
  }
}

/** A key-ring string that breaks the rules. The message never contains a secret. */
export class KeyRingError extends Error {
  constructor(message) {
    super(message);
    this.name = "KeyRingError";
  }
}

/** A sealed token whose cookie would exceed the browser's 4096-byte budget. */
export class TokenTooLarge extends Error {
  constructor(cookieName, size, budget) {
    super(
      `cookie ${JSON.stringify(cookieName)} would be ${size} bytes, over the ${budget}-byte ` +
        "budget browsers keep; put fewer application claims in the token",
    );
    this.name = "TokenTooLarge";
    this.cookieName = cookieName;
    this.size = size;
    this.budget = budget;
  }
}

const refuse = (reason) => new InvalidToken(reason);

// -- the key ring ----------------------------------------------------------------

const KID = /^[A-Za-z0-9_-]{1,16}$/;
const KEY_TEXT = /^[A-Za-z0-9_-]{43}$/;
// "Surrounding whitespace is ignored": exactly the characters Python's str.strip()
// removes, as tokenflow does. JavaScript's trim() differs (it strips U+FEFF and
// keeps U+001C..U+001F and U+0085), so it is not used.
const PY_SPACE =
  "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const pyStrip = (text) => text.replace(PY_STRIP, "");

// Secrets live here, not on the KeyRing object, so that no inspection,
// JSON.stringify or enumeration of a ring can reach them.
const SECRETS = new WeakMap();
const CONSTRUCT = Symbol("KeyRing");

/**
 * A parsed key ring: named 256-bit keys, exactly one of them active (it seals).
 * Build one with `parseKeyRing(text)`, once at start-up. Its string and
 * inspected forms name the key ids only.
 */
export class KeyRing {
  #active;
  #kids;

  constructor(token, active, keys) {
    if (token !== CONSTRUCT) {
      throw new TypeError("build a KeyRing with parseKeyRing(text)");
    }
    this.#active = active;
    this.#kids = Object.freeze([...keys.keys()]);
    SECRETS.set(this, keys);
    Object.freeze(this);
  }

  /** The id of the key that seals new tokens. */
  get active() {
    return this.#active;
  }

  /** Every key id in the ring, in the order of the string form. */
  get kids() {
    return this.#kids;
  }

  /** Whether the ring holds a key named `kid`. */
  has(kid) {
    return SECRETS.get(this).has(kid);
  }

  toString() {
    const retired = this.#kids.filter((kid) => kid !== this.#active);
    return `KeyRing(active=${JSON.stringify(this.#active)}, retired=${JSON.stringify(retired)})`;
  }

  toJSON() {
    return this.toString();
  }

  [INSPECT]() {
    return this.toString();
  }
}

/**
 * Parse the string form of a key ring (docs/token-format.md, "String form"):
 * `[*]kid:key` entries separated by commas, exactly one marked active with `*`,
 * every key 43 canonical base64url characters. Throws `KeyRingError` naming the
 * faulty entry by position (and key id, once that is known), never a secret.
 */
export function parseKeyRing(text) {
  if (typeof text !== "string" || pyStrip(text) === "") {
    throw new KeyRingError(
      "the key ring is empty; generate one with `python -m tokenflow keygen`",
    );
  }
  // Checked in tokenflow's order: each entry's form, id and key, then the
  // number of active keys, then repeated ids.
  const entries = text.split(",").map((rawEntry, index) => {
    const position = index + 1;
    const entry = pyStrip(rawEntry);
    const isActive = entry.startsWith("*");
    const body = isActive ? entry.slice(1) : entry;
    const colon = body.indexOf(":");
    if (colon < 0) {
      throw new KeyRingError(
        `key ring entry ${position} is not of the form '<key id>:<key>' ` +
          "(entries are separated by commas; the active one starts with '*')",
      );
    }
    const kid = body.slice(0, colon);
    const encoded = body.slice(colon + 1);
    if (!KID.test(kid)) {
      throw new KeyRingError(
        `key ring entry ${position} has an invalid key id: use 1 to 16 characters ` +
          "of A-Z, a-z, 0-9, '_' or '-', then ':', then the key",
      );
    }
    if (!KEY_TEXT.test(encoded)) {
      throw new KeyRingError(
        `key '${kid}': the secret must be 43 base64url characters (32 bytes, no ` +
          "padding); generate one with `python -m tokenflow keygen`",
      );
    }
    const secret = Buffer.from(encoded, "base64url");
    // The 43rd character carries 4 key bits and 2 spare bits that must be zero:
    // one key, one spelling.
    if (secret.toString("base64url") !== encoded) {
      throw new KeyRingError(`key '${kid}': the secret is not canonical base64url`);
    }
    const key = createSecretKey(secret);
    secret.fill(0);
    return { kid, key, isActive };
  });
  const active = entries.filter((e) => e.isActive);
  if (active.length !== 1) {
    throw new KeyRingError(
      `the key ring marks ${active.length} keys active; mark exactly one entry with a ` +
        "leading '*' (the key that seals new tokens)",
    );
  }
  // A Map, not a plain object: "__proto__" and "constructor" are valid key ids,
  // and an object lookup would find Object.prototype's members under them.
  const keys = new Map();
  for (const { kid, key } of [...active, ...entries.filter((e) => !e.isActive)]) {
    if (keys.has(kid)) {
      throw new KeyRingError(
        `key id '${kid}' appears twice in the key ring; every key needs its own id`,
      );
    }
    keys.set(kid, key);
  }
  return new KeyRing(CONSTRUCT, active[0].kid, keys);
}

function secretsOf(keyRing) {
  const keys = keyRing instanceof KeyRing ? SECRETS.get(keyRing) : undefined;
  if (keys === undefined) {
    throw new TypeError("keyRing must be a KeyRing from parseKeyRing(text)");
  }
  return keys;
}

function purposeByte(purpose) {
  // Misuse raises rather than failing as a token would: a wrong purpose is a
  // bug in the caller, never something a client can send.
  if (purpose !== Purpose.ACCESS && purpose !== Purpose.REFRESH) {
    throw new TypeError(`purpose must be "access" or "refresh", not ${String(purpose)}`);
  }
  return PURPOSE_BYTES[purpose];
}

/** HKDF-SHA256-Expand(PRK = key, info = "tokenflow/v1 subkey" || salt, L = 32): one HMAC. */
function deriveSubkey(key, salt) {
  return createHmac("sha256", key).update(SUBKEY_INFO).update(salt).update(ONE).digest();
}

// -- strict claims JSON ------------------------------------------------------------
//
// JSON.parse is not strict enough for the specification, and loses information
// the claims checks need:
// - it cannot tell 1700000120.0 or 17e8 from 1700000120, but only a number
//   written without fraction or exponent is an integer `iat` or `exp`;
// - it rounds integers beyond 2^53 silently; the specification reads integers
//   from -2^63 to 2^64-1 exactly and larger ones as floating point;
// - it accepts escaped lone surrogates ("\ud800"), which the specification
//   rejects, and has no depth limit (the specification allows 32 levels);
// - it returns Infinity for numbers beyond a double ("1e400"), which tokenflow
//   (orjson) refuses.
// So claims are read by the small recursive-descent parser below, over text
// that TextDecoder has already checked to be valid UTF-8 (`fatal`). The BOM is
// kept (`ignoreBOM`) so that the parser refuses it, as tokenflow does.
//
// Integers are BigInts while the claims are checked, so that "is an integer"
// is `typeof x === "bigint"`, exactly like Python's `type(x) is int`; floats
// are Numbers. Duplicate member names: the last occurrence wins.

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const HEX4 = /^[0-9A-Fa-f]{4}$/;
const INT_MIN = -(2n ** 63n);
const INT_MAX = 2n ** 64n - 1n;
const SAFE_MIN = BigInt(Number.MIN_SAFE_INTEGER);
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
// The one-character escapes after a backslash, by character code.
const ESCAPES = {
  0x22: '"', 0x5c: "\\", 0x2f: "/", 0x62: "\b", 0x66: "\f", 0x6e: "\n", 0x72: "\r", 0x74: "\t",
};

class Rejected extends Error {}

function decodeJSON(text, maxDepth = MAX_CLAIMS_DEPTH) {
  const n = text.length;
  let i = 0;
  const fail = () => {
    throw new Rejected();
  };
  // RFC 8259 whitespace only: space, tab, line feed, carriage return.
  const skipSpace = () => {
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d; ) {
      c = text.charCodeAt(++i);
    }
  };
  const hex4 = (at) => {
    const digits = text.slice(at, at + 4);
    if (!HEX4.test(digits)) fail();
    return Number.parseInt(digits, 16);
  };

  function value(depth) {
    skipSpace();
    switch (text.charCodeAt(i)) {
      case 0x7b: return object(depth + 1);
      case 0x5b: return array(depth + 1);
      case 0x22: return string();
      case 0x74: return literal("true", true);
      case 0x66: return literal("false", false);
      case 0x6e: return literal("null", null);
      default: return number();
    }
  }

  function literal(word, result) {
    if (!text.startsWith(word, i)) fail();
    i += word.length;
    return result;
  }

  function number() {
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) fail();
    const spelled = m[0];
    i += spelled.length;
    if (m[1] === undefined && m[2] === undefined) {
      // An integer: exact from -2^63 to 2^64-1 (BigInt("-0") is 0n, as Python's int).
      const integer = BigInt(spelled);
      if (integer >= INT_MIN && integer <= INT_MAX) return integer;
    }
    // Number() rounds correctly, as Python's float() does; beyond a double's
    // range it gives Infinity, which tokenflow refuses.
    const float = Number(spelled);
    if (!Number.isFinite(float)) fail();
    return float;
  }

  function string() {
    i++; // the opening quote
    let out = "";
    let start = i;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i++);
        return out;
      }
      if (c < 0x20 || Number.isNaN(c)) fail(); // a raw control character, or the end
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(start, i);
      const e = text.charCodeAt(i + 1);
      i += 2;
      if (e === 0x75) {
        const unit = hex4(i);
        i += 4;
        if (unit >= 0xdc00 && unit <= 0xdfff) fail(); // a low surrogate on its own
        if (unit >= 0xd800 && unit <= 0xdbff) {
          // A high surrogate must be followed at once by an escaped low one.
          if (text.charCodeAt(i) !== 0x5c || text.charCodeAt(i + 1) !== 0x75) fail();
          const low = hex4(i + 2);
          if (low < 0xdc00 || low > 0xdfff) fail();
          i += 6;
          out += String.fromCharCode(unit, low);
        } else {
          out += String.fromCharCode(unit);
        }
      } else {
        const escaped = ESCAPES[e];
        if (escaped === undefined) fail();
        out += escaped;
      }
      start = i;
    }
  }

  function array(depth) {
    if (depth > maxDepth) fail();
    i++;
    const items = [];
    skipSpace();
    if (text.charCodeAt(i) === 0x5d) {
      i++;
      return items;
    }
    for (;;) {
      items.push(value(depth));
      skipSpace();
      const c = text.charCodeAt(i++);
      if (c === 0x5d) return items;
      if (c !== 0x2c) fail();
    }
  }

  function object(depth) {
    if (depth > maxDepth) fail();
    i++;
    const members = {};
    skipSpace();
    if (text.charCodeAt(i) === 0x7d) {
      i++;
      return members;
    }
    for (;;) {
      skipSpace();
      if (text.charCodeAt(i) !== 0x22) fail();
      const name = string();
      skipSpace();
      if (text.charCodeAt(i++) !== 0x3a) fail();
      // Defined, not assigned: "__proto__" becomes an ordinary member (as with
      // JSON.parse) instead of replacing the object's prototype. A repeated
      // name overwrites the value: the last occurrence wins.
      Object.defineProperty(members, name, {
        value: value(depth),
        writable: true,
        enumerable: true,
        configurable: true,
      });
      skipSpace();
      const c = text.charCodeAt(i++);
      if (c === 0x7d) return members;
      if (c !== 0x2c) fail();
    }
  }

  const result = value(0);
  skipSpace();
  if (i !== n) fail(); // trailing non-whitespace
  return result;
}

// Integers as Numbers where that is exact; BigInts beyond 2^53. In place.
function numbersWhereExact(v) {
  if (typeof v === "bigint") return v >= SAFE_MIN && v <= SAFE_MAX ? Number(v) : v;
  if (Array.isArray(v)) {
    for (let k = 0; k < v.length; k++) v[k] = numbersWhereExact(v[k]);
  } else if (v !== null && typeof v === "object") {
    // An own data property, so assignment updates it (even one named "__proto__").
    for (const name of Object.keys(v)) v[name] = numbersWhereExact(v[name]);
  }
  return v;
}

function integersOption(options) {
  const integers = options.integers ?? "auto";
  if (integers !== "auto" && integers !== "bigint") {
    throw new TypeError('options.integers must be "auto" or "bigint"');
  }
  return integers;
}

/**
 * Parse JSON text with the rules tokenflow applies to claims: RFC 8259 only
 * (no NaN, Infinity, comments or trailing commas), no escaped lone surrogates,
 * no number beyond a double's range, at most 32 levels of nesting, the last of
 * duplicate member names wins, and integers exact.
 *
 * `options.integers`: "auto" (default) gives integers as Numbers up to 2^53 and
 * as BigInts beyond, never rounded; "bigint" gives every integer as a BigInt,
 * so that integers and floats stay apart (1 and 1.0 differ, as in Python).
 * Throws SyntaxError.
 */
export function parseStrictJSON(text, options = {}) {
  const integers = integersOption(options);
  if (typeof text !== "string") throw new TypeError("parseStrictJSON reads a string");
  // Claims may nest 32 levels; other documents (a vector file) may ask for more.
  const maxDepth = options.maxDepth ?? MAX_CLAIMS_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 1) {
    throw new RangeError("options.maxDepth must be a positive whole number");
  }
  let result;
  try {
    result = decodeJSON(text, maxDepth);
  } catch (error) {
    if (error instanceof Rejected) throw new SyntaxError("not strict JSON");
    throw error;
  }
  return integers === "auto" ? numbersWhereExact(result) : result;
}

// -- opening -------------------------------------------------------------------------

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const own = (object, name) => (Object.hasOwn(object, name) ? object[name] : undefined);

function leewayOption(options) {
  const leeway = options.leeway ?? 5;
  if (!Number.isInteger(leeway) || leeway < 0 || leeway > MAX_LEEWAY) {
    throw new RangeError(`options.leeway must be whole seconds from 0 to ${MAX_LEEWAY}`);
  }
  return leeway;
}

/**
 * Open a token sealed for `purpose` ("access" or "refresh") and return its claims.
 *
 * `now` is the current time in seconds since the epoch (`Date.now() / 1000`);
 * `options.leeway` (whole seconds, 0 to 300, default 5) absorbs clock skew;
 * `options.integers` is as for `parseStrictJSON`. Any token that does not open
 * throws `InvalidToken`, whose `reason` names the first check that failed, in
 * the specification's order: shape, encoding, version, layout, key, tag,
 * claims, time. Misuse (a wrong key ring, purpose, `now` or option) throws
 * TypeError or RangeError instead.
 */
export function openToken(keyRing, purpose, token, now, options = {}) {
  const keys = secretsOf(keyRing);
  const purposeTag = purposeByte(purpose);
  if (typeof now !== "number") throw new TypeError("now must be a number of seconds");
  const leeway = leewayOption(options);
  const integers = integersOption(options);

  // 1. Shape. A missing cookie (undefined) or anything but a string is malformed.
  if (typeof token !== "string" || token.length % 4 !== 0 || token.length > MAX_TOKEN_CHARS) {
    throw refuse(TokenFailure.MALFORMED);
  }
  // 2. Encoding. Buffer.from(_, "base64url") skips characters it does not know,
  // so the alphabet is checked first. With only the 64 characters and a length
  // that is a multiple of 4 there is no padding and no spare bit: one spelling.
  if (!BASE64URL.test(token)) throw refuse(TokenFailure.MALFORMED);
  const raw = Buffer.from(token, "base64url");
  // 3. Version, before any length check: another version may have another layout.
  if (raw.length === 0) throw refuse(TokenFailure.MALFORMED);
  if (raw[0] !== VERSION) throw refuse(TokenFailure.UNSUPPORTED_VERSION);
  // 4. Layout. (A non-empty raw is a multiple of 3 long, so raw[1] exists.)
  const kidLength = raw[1];
  const end = 2 + kidLength + SALT_BYTES;
  const tooShort = raw.length < end + NONCE_BYTES + TAG_BYTES + MIN_PLAINTEXT;
  if (tooShort || kidLength < 1 || kidLength > 16) throw refuse(TokenFailure.MALFORMED);
  // 5. Key. The header is read only to pick the key; the tag authenticates it next.
  let key;
  if (raw.subarray(2, 2 + kidLength).every((byte) => byte < 0x80)) {
    key = keys.get(raw.toString("latin1", 2, 2 + kidLength));
  }
  if (key === undefined) throw refuse(TokenFailure.UNKNOWN_KEY);
  // 6. Tag. update() hands out plaintext before the tag is checked; nothing
  // looks at it until final() has verified the tag (in constant time, in OpenSSL).
  const decipher = createDecipheriv(
    "aes-256-gcm",
    deriveSubkey(key, raw.subarray(end - SALT_BYTES, end)),
    raw.subarray(end, end + NONCE_BYTES),
    { authTagLength: TAG_BYTES },
  );
  decipher.setAAD(Buffer.concat([raw.subarray(0, end), purposeTag]));
  decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
  const plaintext = decipher.update(raw.subarray(end + NONCE_BYTES, raw.length - TAG_BYTES));
  try {
    decipher.final();
  } catch {
    throw refuse(TokenFailure.TAG_MISMATCH);
  }
  // 7. Claims.
  let claims;
  try {
    claims = decodeJSON(UTF8.decode(plaintext));
  } catch (error) {
    if (error instanceof Rejected || error?.code === "ERR_ENCODING_INVALID_ENCODED_DATA") {
      throw refuse(TokenFailure.BAD_CLAIMS);
    }
    throw error;
  }
  // Own members only: a polluted Object.prototype.sub must not stand in for a
  // missing claim.
  if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
    throw refuse(TokenFailure.BAD_CLAIMS);
  }
  const exp = own(claims, "exp");
  const iat = own(claims, "iat");
  const sub = own(claims, "sub");
  if (typeof exp !== "bigint" || typeof iat !== "bigint" || typeof sub !== "string") {
    throw refuse(TokenFailure.BAD_CLAIMS);
  }
  // 8. Time, in the "unless" form so that a NaN `now` fails both tests. A
  // BigInt and a Number compare exactly, like Python's int and float; the sum
  // exp + leeway is a BigInt so that it is exact too.
  const expired = !(now < exp + BigInt(leeway));
  const early = !(iat <= now + leeway);
  if (expired) throw refuse(TokenFailure.EXPIRED);
  if (early) throw refuse(TokenFailure.NOT_YET_VALID);
  return integers === "auto" ? numbersWhereExact(claims) : claims;
}

// -- sealing -------------------------------------------------------------------------
//
// A Node service normally only opens tokenflow's tokens. Sealing is here so
// that the seal vectors can be reproduced byte for byte, and for services that
// must hand out tokens a tokenflow server accepts.

const TO_ESCAPE = /["\\\u0000-\u001f]/g;
const ESCAPED = {
  '"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
};
const escape = (c) => ESCAPED[c] ?? `\\u00${c.charCodeAt(0).toString(16).padStart(2, "0")}`;

function quote(text) {
  if (!text.isWellFormed()) {
    throw new TypeError("claims text must be valid Unicode (it holds a lone surrogate)");
  }
  // Only '"', '\' and U+0000..U+001F are escaped, as orjson does; everything else
  // is written as itself (UTF-8 once encoded).
  return `"${text.replace(TO_ESCAPE, escape)}"`;
}

function isIntegerClaim(v) {
  return (typeof v === "bigint" && v >= INT_MIN && v <= INT_MAX) || Number.isSafeInteger(v);
}

// Compact JSON, members in the caller's order: byte-identical to tokenflow's
// for everything but floats (whose shortest spelling differs between
// serialisers; an opener reads the same value).
function encodeJSON(v, depth) {
  if (v === null) return "null";
  switch (typeof v) {
    case "boolean":
      return v ? "true" : "false";
    case "string":
      return quote(v);
    case "bigint":
      if (v < INT_MIN || v > INT_MAX) throw new TypeError("integers in claims must fit 64 bits");
      return v.toString();
    case "number":
      if (!Number.isFinite(v)) throw new TypeError("claims cannot carry NaN or Infinity");
      if (Number.isSafeInteger(v)) return String(v);
      // Integral beyond 2^53 it is a rounded double: written with an exponent so
      // that openers read the floating-point number it is. (Pass a BigInt for an
      // exact large integer.)
      return Number.isInteger(v) ? v.toExponential() : String(v);
    case "object":
      break;
    default:
      throw new TypeError(`claims cannot carry a ${typeof v}`);
  }
  if (depth >= MAX_CLAIMS_DEPTH) {
    throw new TypeError(`claims nest more than ${MAX_CLAIMS_DEPTH} levels deep`);
  }
  if (Array.isArray(v)) {
    const items = [];
    for (let k = 0; k < v.length; k++) items.push(encodeJSON(v[k], depth + 1));
    return `[${items.join(",")}]`;
  }
  let entries;
  if (v instanceof Map) {
    entries = [...v];
  } else {
    const proto = Object.getPrototypeOf(v);
    if ((proto !== Object.prototype && proto !== null) || Object.getOwnPropertySymbols(v).length) {
      throw new TypeError(
        "claims hold plain objects, Maps, arrays, strings, numbers, BigInts, booleans and null",
      );
    }
    entries = Object.entries(v);
  }
  const members = entries.map(([name, item]) => {
    if (typeof name !== "string") throw new TypeError("member names must be strings");
    return `${quote(name)}:${encodeJSON(item, depth + 1)}`;
  });
  return `{${members.join(",")}}`;
}

function bytesOption(value, length, name) {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw new TypeError(`options.${name} must be ${length} bytes`);
  }
  return value;
}

/**
 * Seal `claims` for `purpose` under the ring's active key and return the token.
 *
 * `claims` is a plain object (or a Map, to fix the member order) holding `sub`
 * (a string) and `iat` and `exp` (whole seconds since the epoch, as safe
 * integers or BigInts); other members may be any JSON value. Each token gets a
 * fresh random salt and nonce, so every token has its own subkey.
 *
 * `options.salt` (8 bytes) and `options.nonce` (12 bytes) fix the randomness,
 * only for reproducing known-answer vectors: a fixed nonce used twice breaks
 * AES-GCM. `options.cookieName` (default: tokenflow's name for the purpose)
 * is the cookie the token travels in; a token that would make that cookie
 * exceed 4096 bytes throws `TokenTooLarge`. Claims that break the format throw
 * TypeError.
 */
export function sealToken(keyRing, purpose, claims, options = {}) {
  const keys = secretsOf(keyRing);
  const purposeTag = purposeByte(purpose);
  if ((options.salt === undefined) !== (options.nonce === undefined)) {
    throw new TypeError("options.salt and options.nonce go together (known-answer tests only)");
  }
  const fixed = options.salt !== undefined;
  const salt = fixed ? bytesOption(options.salt, SALT_BYTES, "salt") : randomBytes(SALT_BYTES);
  const nonce = fixed ? bytesOption(options.nonce, NONCE_BYTES, "nonce") : randomBytes(NONCE_BYTES);
  const cookieName = options.cookieName ?? DEFAULT_COOKIE_NAMES[purpose];
  if (typeof cookieName !== "string" || cookieName === "") {
    throw new TypeError("options.cookieName must be a non-empty string");
  }
  const read = (name) => (claims instanceof Map ? claims.get(name) : own(claims, name));
  if (
    claims === null ||
    typeof claims !== "object" ||
    Array.isArray(claims) ||
    typeof read("sub") !== "string" ||
    !isIntegerClaim(read("iat")) ||
    !isIntegerClaim(read("exp"))
  ) {
    throw new TypeError("claims need 'sub' (a string), 'iat' and 'exp' (integers)");
  }
  const json = Buffer.from(encodeJSON(claims, 0), "utf8");

  const kid = Buffer.from(keyRing.active, "ascii");
  const header = Buffer.concat([VERSION_BYTE, Buffer.from([kid.length]), kid, salt]);
  // 0, 1 or 2 spaces make the sealed bytes a multiple of 3 long: base64url
  // without padding or spare bits, so the token has exactly one spelling.
  const fill = FILL[(3 - ((header.length + NONCE_BYTES + TAG_BYTES + json.length) % 3)) % 3];
  const subkey = deriveSubkey(keys.get(keyRing.active), salt);
  const cipher = createCipheriv("aes-256-gcm", subkey, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.concat([header, purposeTag]));
  const ciphertext = Buffer.concat([cipher.update(Buffer.concat([json, fill])), cipher.final()]);
  const sealed = Buffer.concat([header, nonce, ciphertext, cipher.getAuthTag()]);
  const token = sealed.toString("base64url");
  const size = Buffer.byteLength(cookieName, "utf8") + 1 + token.length;
  if (size > COOKIE_BUDGET) throw new TokenTooLarge(cookieName, size, COOKIE_BUDGET);
  return token;
}
