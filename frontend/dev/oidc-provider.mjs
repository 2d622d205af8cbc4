// A real, standards OpenID provider standing in for Cognito's hosted UI on
// the local stack (npm `oidc-provider`, certified by the OpenID
// Foundation): authorization code + PKCE, RS256-signed ID tokens, JWKS,
// discovery, end-session. The web app signs in here exactly as it does
// against Cognito; the API verifies these JWTs as API Gateway's JWT
// authorizer does in AWS.
//
// Only the login page is ours (the library's development pages load web
// fonts and accept any password): it checks the development users below
// and grants the first-party app its scopes without a consent screen.
//
//   OIDC_PORT (58090), OIDC_ISSUER (http://127.0.0.1:$OIDC_PORT),
//   OIDC_CLIENT_ID (cxr-web-local), OIDC_APP_ORIGINS (comma-separated
//   origins allowed to sign in), OIDC_ID_TOKEN_TTL_SECS (3600),
//   OIDC_DEV_USERS (user:password,...).
import http from "node:http";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT ?? 58090);
const issuer = process.env.OIDC_ISSUER ?? `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID ?? "cxr-web-local";
const origins = (process.env.OIDC_APP_ORIGINS ?? "http://127.0.0.1:8000,http://127.0.0.1:5173").split(",").map((o) => o.trim()).filter(Boolean);
const idTokenTtl = Number(process.env.OIDC_ID_TOKEN_TTL_SECS ?? 3600);
const users = new Map(
  (process.env.OIDC_DEV_USERS ?? "alice:alice-password,bob:bob-password")
    .split(",")
    .map((pair) => pair.split(":"))
    .filter(([user, password]) => user && password),
);

// A signing key per start: a restarted provider's old tokens stop working,
// as after a key rotation.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: `local-${Date.now().toString(36)}`, alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [
    {
      client_id: clientId,
      application_type: "web",
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: origins.map((o) => `${o}/auth/callback`),
      post_logout_redirect_uris: origins.map((o) => `${o}/`),
    },
  ],
  pkce: { required: () => true },
  // Browsers on these origins call the token endpoint directly.
  clientBasedCORS: (_ctx, origin) => origins.includes(origin),
  findAccount: (_ctx, id) =>
    users.has(id) ? { accountId: id, claims: () => ({ sub: id, name: id, preferred_username: id }) } : undefined,
  claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    // Signs out at once, as Cognito's /logout does (no confirmation page).
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: (ctx, form) => {
        ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signing out</title></head><body>
<p>Signing out…</p>${form}<noscript><button form="op.logoutForm" name="logout" value="yes">Sign out</button></noscript>
<script>const f=document.getElementById("op.logoutForm");const i=document.createElement("input");i.type="hidden";i.name="logout";i.value="yes";f.appendChild(i);f.submit();</script></body></html>`;
      },
    },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: idTokenTtl, AccessToken: idTokenTtl, Session: 8 * 3600, Interaction: 600, Grant: 8 * 3600 },
  cookies: { keys: [randomBytes(32).toString("hex")] },
});
// Loopback http is fine for the local stand-in.
provider.proxy = false;

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (uid, error = "") => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: CXR local</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;background:#111;color:#eee;display:grid;place-items:center;min-height:100vh;margin:0}
main{background:#1d1d1d;padding:2rem;border-radius:8px;min-width:18rem}label{display:block;margin:.8rem 0 .3rem}
input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}button{margin-top:1.2rem;padding:.6rem 1.2rem;font-size:1rem}
[role=alert]{color:#ff9b9b}</style></head>
<body><main><h1>Sign in</h1><p>Local stand-in for Cognito's sign-in page.</p>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ""}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></main></body></html>`;

async function readForm(req) {
  let body = "";
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) throw new Error("form too large");
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error("interaction mismatch");
  if (details.prompt.name === "consent") {
    // The platform's own app: grant what it asked for, no consent screen.
    const grant = details.grantId ? await provider.Grant.find(details.grantId) : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(" "));
    if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action === "login" && req.method === "POST") {
    const form = await readForm(req);
    const user = form.get("username") ?? "";
    if (users.get(user) === form.get("password")) {
      return provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
    }
    res.writeHead(401, { "content-type": "text/html; charset=utf-8" });
    return res.end(page(uid, "Unknown user name or wrong password."));
  }
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(page(uid));
}

const oidc = provider.callback();
http
  .createServer((req, res) => {
    const match = /^\/interaction\/([\w-]+)(?:\/(login))?$/.exec(new URL(req.url, issuer).pathname);
    if (!match) return oidc(req, res);
    interaction(req, res, match[1], match[2]).catch((err) => {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end(`sign-in failed: ${err.message}`);
    });
  })
  .listen(port, "127.0.0.1", () => console.log(`OpenID provider ${issuer} (client ${clientId}; users ${[...users.keys()].join(", ")})`));
