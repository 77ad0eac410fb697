// A real OpenID provider for the test suite: the certified `oidc-provider` package, configured as
// a company IdP would be for the portal (authorization code flow, PKCE required, RS256 ID tokens
// with a JWKS, a `groups` claim, `amr` from the login).
//
// Usage: node provider.js PORT ACCOUNTS_JSON CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// ACCOUNTS_JSON is re-read on every sign-in and every claims lookup, so a test changes a person's
// groups (or MFA) at the provider by rewriting the file:
//   {"alice": {"password": "...", "email": "...", "given_name": "...", "family_name": "...",
//              "preferred_username": "...", "groups": ["..."], "amr": ["pwd", "mfa"], "acr": "..."}}
// The key is the stable subject (`sub`). Any other claim in the entry is issued as it is (hostile
// values included), so tests can send what a broken provider would.
//
// It prints "listening on http://127.0.0.1:PORT" when it accepts connections.

import crypto from 'node:crypto';
import fs from 'node:fs';

import Provider from 'oidc-provider';

const [port, accountsPath, clientId, clientSecret, redirectUri] = process.argv.slice(2);
if (!port || !accountsPath || !clientId || !clientSecret || !redirectUri) {
  console.error('usage: node provider.js PORT ACCOUNTS_JSON CLIENT_ID CLIENT_SECRET REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

function accounts() {
  return JSON.parse(fs.readFileSync(accountsPath, 'utf8'));
}

const RESERVED = new Set(['password', 'amr', 'acr']);

// A fresh signing key per run: the portal must find it through the JWKS, never by configuration.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    // `amr` and `acr` come from the login (the interaction below) and go into every ID token, as
    // Okta's and Entra ID's do (oidc-provider otherwise issues them only when asked for).
    openid: ['sub', 'amr', 'acr'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  findAccount: async (ctx, sub) => {
    if (!Object.hasOwn(accounts(), sub)) return undefined;
    return {
      accountId: sub,
      async claims() {
        const entry = accounts()[sub] || {};
        const claims = { sub };
        for (const [name, value] of Object.entries(entry)) {
          if (!RESERVED.has(name)) claims[name] = value;
        }
        return claims;
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(uid, error) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test IdP: sign in</title></head>
<body><main><h1>Test IdP</h1><p>Sign in to continue to the data access portal.</p>
${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">IdP username</label><input id="login" name="login" autocomplete="username" autofocus>
<label for="password">IdP password</label><input id="password" name="password" type="password">
<button type="submit">Continue</button></form></main></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// The login and consent prompts, as a company IdP shows them: the login page checks the password
// from the accounts file and records `amr`/`acr` for the ID token; consent is given for this
// first-party client without asking.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const { req, res } = ctx;
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'consent') {
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    ctx.respond = false;
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return undefined;
  }
  if (!match[2] || ctx.method !== 'POST') {
    ctx.type = 'html';
    ctx.body = page(details.uid);
    return undefined;
  }
  const form = await readForm(req);
  const login = form.get('login') || '';
  const entry = Object.hasOwn(accounts(), login) ? accounts()[login] : null;
  if (!entry || entry.password !== form.get('password')) {
    ctx.type = 'html';
    ctx.body = page(details.uid, 'Wrong username or password.');
    return undefined;
  }
  const result = { login: { accountId: login, amr: entry.amr || ['pwd'], ...(entry.acr ? { acr: entry.acr } : {}) } };
  ctx.respond = false;
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  return undefined;
});

const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening on ${issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
