"use strict";
// The tokenflow web demo page. Everything shown comes from the server: the
// auth cookies are HttpOnly, so this script cannot read them.
(function () {
  const $ = (id) => document.getElementById(id);
  const JSON_HEADERS = { "Content-Type": "application/json", "Accept": "application/json" };
  const cookies = new Map(); // name -> {entry, at}
  let lastSeq = 0;
  let mfaOn = false;
  let autoTimer = null;

  function text(tag, content, cls) {
    const node = document.createElement(tag);
    node.textContent = content;
    if (cls) node.className = cls;
    return node;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }

  function show(label, status, body) {
    $("result").textContent = label + " → " + status + "\n" + JSON.stringify(body, null, 2);
  }

  async function call(method, url, body) {
    const init = { method: method, headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      init.headers = JSON_HEADERS;
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    return { status: response.status, body: payload };
  }

  async function whoAmI() {
    const answer = await call("GET", "/api/me");
    const status = $("status");
    const signedIn = answer.status === 200;
    // Signed in: no login form (a second login would replace this session).
    const secondStep = !signedIn && new URLSearchParams(location.search).has("second-factor");
    $("login-section").hidden = signedIn || secondStep;
    $("second-factor-step").hidden = !secondStep;
    if (mfaOn) $("mfa-section").hidden = !signedIn;
    $("signed-in-note").hidden = !signedIn;
    if (signedIn) $("error").hidden = true;
    if (signedIn) {
      status.textContent = "Signed in as " + answer.body.user_id + " (session " +
        answer.body.session_id.slice(0, 8) + "…, aal " + (answer.body.aal || 1) +
        "); this request was a " + answer.body.decision +
        (answer.body.refreshed ? " (silent refresh)" : "") + "; cookies sent: " +
        (answer.body.cookies_sent.join(", ") || "none");
      status.className = "signed-in";
    } else {
      status.textContent = "Not signed in (" + answer.status + ")";
      status.className = "signed-out";
    }
    return answer;
  }

  async function callApi() {
    const answer = await whoAmI();
    show("GET /api/me", answer.status, answer.body);
    return answer;
  }

  function renderCookies() {
    const body = document.querySelector("#cookies tbody");
    body.replaceChildren();
    const now = Date.now() / 1000;
    for (const [name, seen] of cookies) {
      const row = document.createElement("tr");
      row.appendChild(text("td", name));
      row.appendChild(text("td", seen.entry.cleared ? "(cleared)" : seen.entry.value));
      row.appendChild(text("td", seen.entry.attributes.join("; ") +
        (seen.entry.secure ? "" : "  (no Secure: plain-HTTP demo)")));
      let left = "session";
      if (seen.entry.cleared) left = "gone";
      else if (seen.entry.max_age !== null) {
        const remaining = Math.round(seen.entry.max_age - (now - seen.at));
        left = remaining > 0 ? remaining + " s" : "expired";
      }
      row.appendChild(text("td", left));
      body.appendChild(row);
    }
    $("document-cookie").textContent = JSON.stringify(document.cookie) +
      (document.cookie ? "" : "  (empty: the auth cookies are HttpOnly)");
  }

  function addEntry(entry) {
    const item = document.createElement("li");
    const when = clock(entry.t) + "  ";
    if (entry.kind === "decision") {
      // What the browser got comes first; the flow's decision type is the detail.
      const status = entry.http_status === null ? entry.status : entry.http_status;
      item.className = "decision" + (status >= 400 ? " refused" : "");
      item.appendChild(text("span", when + entry.op + "  →  " + entry.summary));
      item.appendChild(text("span", "decision: " + entry.decision + " " + entry.status +
        (entry.detail ? "  " + entry.detail : ""), "event"));
      for (const event of entry.events) item.appendChild(text("span", "event: " + event, "event"));
    } else if (entry.kind === "set-cookie") {
      item.className = "set-cookie";
      item.appendChild(text("span", when + "Set-Cookie (" + entry.status + " " + entry.path +
        "): " + entry.name + "=" + entry.value + "; " + entry.attributes.join("; ")));
      cookies.set(entry.name, { entry: entry, at: entry.t });
    } else {
      item.className = "note";
      item.appendChild(text("span", when + entry.text));
    }
    $("log").prepend(item);
  }

  async function pollLog() {
    try {
      const answer = await call("GET", "/demo/log?after=" + lastSeq);
      for (const entry of answer.body.entries) {
        addEntry(entry);
        lastSeq = entry.seq;
      }
    } catch (e) { /* the server stopped: keep trying */ }
  }

  async function init() {
    const config = (await call("GET", "/demo/config")).body;
    $("lifetimes").textContent = "access tokens live " + config.access_ttl + " s, sessions end after " +
      config.refresh_idle_ttl + " s idle (" + config.refresh_absolute_ttl + " s at most), grace window " +
      config.grace_seconds + " s.";
    const users = $("users");
    for (const user of config.users) {
      const item = text("li", user.username + " / " + user.password + " ");
      const fill = text("button", "fill in");
      fill.type = "button";
      fill.addEventListener("click", () => {
        $("username").value = user.username;
        $("password").value = user.password;
      });
      item.appendChild(fill);
      users.appendChild(item);
    }
    if (config.providers && config.providers.length) {
      $("provider-login").href = "/auth/oidc/" + encodeURIComponent(config.providers[0]) + "/start?next=/";
      $("provider-signin").hidden = false;
    }
    $("attacker-link").href = config.attacker + "/";
    $("docs-link").href = config.docs.served;
    const query = new URLSearchParams(location.search);
    const error = query.get("error");
    if (query.get("second-factor")) {
      // The first step was right: the login form gives way to the code form.
      $("second-factor-step").hidden = false;
      $("login-section").hidden = true;
      $("second-factor-next").value = query.get("next") || "/";
      if (error) {
        $("error").textContent = "Wrong code (" + error + "): type the current one, or a recovery code.";
        $("error").hidden = false;
      }
    } else if (error) {
      $("error").textContent = "Login failed (" + error + "): check the username and password.";
      $("error").hidden = false;
    }

    $("call-api").addEventListener("click", callApi);
    $("auto").addEventListener("change", (e) => {
      if (autoTimer) clearInterval(autoTimer);
      autoTimer = e.target.checked ? setInterval(callApi, 2000) : null;
    });
    $("drop-access").addEventListener("click", async () => {
      await fetch("/demo/drop-access", { method: "POST" });
      show("POST /demo/drop-access", 204, "access cookie cleared: the next call refreshes");
    });
    $("second-tab").addEventListener("click", () => window.open("/", "_blank"));
    $("replay").addEventListener("click", async () => {
      const answer = await call("POST", "/demo/replay", {});
      show("POST /demo/replay (the server replays an old refresh token)", answer.status, answer.body);
    });
    $("sessions").addEventListener("click", async () => {
      const answer = await call("GET", "/auth/sessions");
      show("GET /auth/sessions", answer.status, answer.body);
    });
    $("revoke-others").addEventListener("click", async () => {
      const answer = await call("POST", "/auth/sessions/revoke-others", {});
      show("POST /auth/sessions/revoke-others", answer.status, answer.body);
    });
    $("signout-all").addEventListener("click", async () => {
      const others = await call("POST", "/auth/sessions/revoke-others", {});
      const mine = await call("POST", "/auth/logout", {});
      show("revoke-others, then logout", mine.status, { others: others.body, logout: mine.body });
      await whoAmI();
    });

    // -- passkeys (issue 21) --
    if (config.passkeys && window.tokenflowPasskeys) {
      $("passkeys-origin").href = config.passkeys + "/";
      $("passkeys-origin").textContent = config.passkeys;
      $("passkey-add").addEventListener("click", async () => {
        const answer = await tokenflowPasskeys.register({ name: "demo passkey" });
        show("add a passkey", answer.status, answer.body);
      });
      $("passkey-login").addEventListener("click", async () => {
        const answer = await tokenflowPasskeys.signIn();
        show("sign in with a passkey", answer.status, answer.body);
        await whoAmI();
      });
      $("passkey-list").addEventListener("click", async () => {
        const answer = await call("GET", "/auth/passkeys");
        show("GET /auth/passkeys", answer.status, answer.body);
      });
    } else {
      $("passkeys-section").hidden = true;
    }
    // -- end passkeys --
    // -- second factors (issue 22) --
    mfaOn = Boolean(config.mfa);
    if (mfaOn) setUpSecondFactors(config);
    // -- end second factors --
    await whoAmI();
    await pollLog();
    setInterval(pollLog, 1000);
    setInterval(renderCookies, 500);
    renderCookies();
    document.body.dataset.ready = "1";
  }

  // -- second factors (issue 22) --
  let afterStepUp = null;

  function mfaSay(message) {
    $("mfa-message").textContent = message;
  }

  function needsStepUp(answer) {
    return answer.status === 401 && answer.body && answer.body.error === "insufficient_user_authentication";
  }

  function askStepUp(answer, retry) {
    // The server answered 401 with the RFC 9470 challenge: ask for a code, then retry.
    const why = answer.body.aal === 2
      ? "This needs a second factor" + (answer.body.max_age ? " used within the last " + answer.body.max_age + " s" : "")
      : "This needs a login within the last " + answer.body.max_age + " s";
    $("step-up-why").textContent = why + ": type a code from your authenticator app (step-up).";
    $("step-up").hidden = false;
    $("step-up-code").value = "";
    afterStepUp = retry;
  }

  async function gated(label, method, url, body, then) {
    const answer = await call(method, url, body);
    show(label, answer.status, answer.body);
    if (needsStepUp(answer)) {
      askStepUp(answer, () => gated(label, method, url, body, then));
      return answer;
    }
    if (then) then(answer);
    return answer;
  }

  function showCodes(codes) {
    const list = $("mfa-recovery-codes");
    list.replaceChildren();
    for (const code of codes) list.appendChild(text("li", code));
    $("mfa-codes-box").hidden = false;
  }

  function setUpSecondFactors(config) {
    $("mfa-begin").addEventListener("click", () => gated(
      "POST /auth/mfa/totp/begin", "POST", "/auth/mfa/totp/begin", {}, (answer) => {
        if (answer.status !== 200) {
          mfaSay("Could not start (" + answer.status + ").");
          return;
        }
        // Parsed as HTML (the SVG carries no xmlns): no script runs, and the CSP allows it.
        const svg = new DOMParser().parseFromString(answer.body.qr_svg, "text/html").querySelector("svg");
        $("mfa-qr").replaceChildren(document.importNode(svg, true));
        $("mfa-secret").textContent = answer.body.secret;
        $("mfa-code").value = "";
        $("mfa-enrol").hidden = false;
        $("mfa-codes-box").hidden = true;
        // The secret is not kept in the log pane: replace what show() wrote.
        show("POST /auth/mfa/totp/begin", answer.status, { enrolment: "started", expires_at: answer.body.expires_at });
        mfaSay("Scan the code, then type the first code the app shows.");
      }));
    $("mfa-confirm").addEventListener("click", () => gated(
      "POST /auth/mfa/totp/confirm", "POST", "/auth/mfa/totp/confirm", { code: $("mfa-code").value.trim() },
      (answer) => {
        if (answer.status !== 200) {
          mfaSay("Not confirmed (" + (answer.body && answer.body.error) + "): try the current code.");
          return;
        }
        $("mfa-enrol").hidden = true;
        $("mfa-qr").replaceChildren();
        $("mfa-secret").textContent = "";
        showCodes(answer.body.recovery_codes);
        show("POST /auth/mfa/totp/confirm", 200, { factors: answer.body.factors, recovery_codes: "(shown once, above)" });
        mfaSay("Authenticator app set up: the next login asks for a code.");
      }));
    $("mfa-status").addEventListener("click", async () => {
      const answer = await call("GET", "/auth/mfa");
      show("GET /auth/mfa", answer.status, answer.body);
      if (answer.status === 200) {
        mfaSay("Factors: " + (answer.body.factors.join(", ") || "none") +
          "; recovery codes left: " + answer.body.recovery_codes_left);
      }
    });
    $("mfa-regenerate").addEventListener("click", () => gated(
      "POST /auth/mfa/recovery-codes", "POST", "/auth/mfa/recovery-codes", {}, (answer) => {
        if (answer.status === 200) {
          showCodes(answer.body.recovery_codes);
          show("POST /auth/mfa/recovery-codes", 200, { recovery_codes: "(shown once, above)" });
          mfaSay("New recovery codes: the old ones no longer work.");
        }
      }));
    $("mfa-remove").addEventListener("click", () => gated(
      "POST /auth/mfa/remove", "POST", "/auth/mfa/remove", {}, (answer) => {
        if (answer.status === 200) mfaSay(answer.body.removed ? "Second factor removed." : "Nothing to remove.");
      }));
    $("admin").addEventListener("click", () => {
      $("admin-status").textContent = "Opening the admin area…";
      return gated("GET /api/admin", "GET", "/api/admin", undefined, (answer) => {
        $("admin-status").textContent = answer.status === 200
          ? "Admin area open: aal " + answer.body.aal + ", amr " + answer.body.amr.join("+")
          : "Admin area refused (" + answer.status + ")";
      });
    });
    $("step-up-submit").addEventListener("click", async () => {
      const answer = await call("POST", "/auth/step-up", { code: $("step-up-code").value.trim() });
      show("POST /auth/step-up", answer.status, answer.body);
      if (answer.status !== 200) {
        $("step-up-why").textContent = "Refused (" + (answer.body && answer.body.error) + "): try the current code.";
        return;
      }
      $("step-up").hidden = true;
      const retry = afterStepUp;
      afterStepUp = null;
      if (retry) await retry();
    });
    if (new URLSearchParams(location.search).get("step-up")) {
      mfaSay("That page needs a second factor: use a button below, and the step-up prompt appears.");
    }
  }
  // -- end second factors --

  window.tokenflowDemo = { callApi: callApi, whoAmI: whoAmI };
  init();
})();
