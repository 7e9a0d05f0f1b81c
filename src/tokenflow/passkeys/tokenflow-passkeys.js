// tokenflow-passkeys.js: passkey registration and sign-in against tokenflow's
// endpoints (/auth/passkeys/..., /auth/login). No build step, no dependency:
// serve this file as it is and load it with <script src=... defer>.
//
//   await tokenflowPasskeys.register({ name: "My laptop" });  // signed-in user adds a passkey
//   await tokenflowPasskeys.signIn();                         // sign in with a passkey
//   tokenflowPasskeys.autofill();   // offer passkeys in an <input autocomplete="username webauthn">
//
// Each call resolves to { status, body } of the last request (the server's JSON).
// The browser's own JSON helpers (parseCreationOptionsFromJSON, toJSON) are
// used where present, with a fallback for older browsers.
(function (global) {
  "use strict";

  function toBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const raw = atob(padded);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (let i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      user: Object.assign({}, json.user, { id: toBytes(json.user.id) }),
      excludeCredentials: (json.excludeCredentials || []).map(function (c) {
        return Object.assign({}, c, { id: toBytes(c.id) });
      }),
    });
  }

  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      allowCredentials: (json.allowCredentials || []).map(function (c) {
        return Object.assign({}, c, { id: toBytes(c.id) });
      }),
    });
  }

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      response.userHandle = r.userHandle ? toText(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
    });
    let parsed = null;
    try {
      parsed = await answer.json();
    } catch (_) {
      parsed = null;
    }
    return { status: answer.status, body: parsed };
  }

  async function register(options) {
    const opts = options || {};
    const base = opts.base || "/auth/passkeys";
    const started = await post(base + "/register/options", {});
    if (started.status !== 200) return started;
    const credential = await navigator.credentials.create({
      publicKey: creationOptions(started.body),
    });
    return post(base + "/register", {
      response: JSON.stringify(credentialJSON(credential)),
      name: opts.name || "",
    });
  }

  // The JSON of navigator.credentials.get() for a fresh login challenge, not posted.
  async function assertion(options) {
    const opts = options || {};
    const base = opts.base || "/auth/passkeys";
    const started = await post(base + "/login/options", {});
    if (started.status !== 200) throw new Error("login options refused: " + started.status);
    const request = { publicKey: requestOptions(started.body) };
    if (opts.mediation) request.mediation = opts.mediation;
    if (opts.signal) request.signal = opts.signal;
    const credential = await navigator.credentials.get(request);
    return JSON.stringify(credentialJSON(credential));
  }

  async function signIn(options) {
    const opts = options || {};
    const response = await assertion(opts);
    return post(opts.login || "/auth/login", { passkey: response });
  }

  // Conditional UI: the browser offers passkeys in the username field's autofill.
  async function autofill(options) {
    if (
      typeof PublicKeyCredential === "undefined" ||
      typeof PublicKeyCredential.isConditionalMediationAvailable !== "function" ||
      !(await PublicKeyCredential.isConditionalMediationAvailable())
    ) {
      return null;
    }
    return signIn(Object.assign({}, options || {}, { mediation: "conditional" }));
  }

  global.tokenflowPasskeys = {
    register: register,
    signIn: signIn,
    autofill: autofill,
    assertion: assertion,
  };
})(window);
