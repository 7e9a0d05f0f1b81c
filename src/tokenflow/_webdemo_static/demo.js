"use strict";
// The tokenflow web demo page. Everything shown comes from the server: the
// auth cookies are HttpOnly, so this script cannot read them.
(function () {
  const $ = (id) => document.getElementById(id);
  const JSON_HEADERS = { "Content-Type": "application/json", "Accept": "application/json" };
  const cookies = new Map(); // name -> {entry, at}
  let lastSeq = 0;
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
    $("login-section").hidden = signedIn;
    $("signed-in-note").hidden = !signedIn;
    if (signedIn) $("error").hidden = true;
    if (signedIn) {
      status.textContent = "Signed in as " + answer.body.user_id + " (session " +
        answer.body.session_id.slice(0, 8) + "…); this request was a " + answer.body.decision +
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
    const error = new URLSearchParams(location.search).get("error");
    if (error) {
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
    await whoAmI();
    await pollLog();
    setInterval(pollLog, 1000);
    setInterval(renderCookies, 500);
    renderCookies();
    document.body.dataset.ready = "1";
  }

  window.tokenflowDemo = { callApi: callApi, whoAmI: whoAmI };
  init();
})();
